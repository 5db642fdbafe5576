"""`python -m bench` without a reachable broker: one line and a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

from tests.support.kafka import free_port


def test_a_bench_run_without_a_broker_says_so_in_one_line_and_exits_2() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--bootstrap", bootstrap, "--quick", "--only", "e2e"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert f"no Kafka broker answers at {bootstrap}" in lines[0]
    assert "Traceback" not in result.stderr
