"""The environment the quixstreams row runs in: `.venv-quixstreams`, made from
`bench/quixstreams-requirements.txt` on first use (again when that file changes).

quixstreams cannot join caremesh's environment or its `bench` extra: its confluent-kafka,
pydantic and pydantic-settings bounds are older than caremesh's pins (see the requirements file).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "bench" / "quixstreams-requirements.txt"
ENV = ROOT / ".venv-quixstreams"


def ensure_env() -> Path:
    """The Python interpreter of the quixstreams environment, installed if needed."""
    python = ENV / "bin" / "python"
    stamp = ENV / ".bench-requirements"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    print(f"[bench] installing quixstreams into {ENV}", file=sys.stderr, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(want)
    return python
