"""The README's first command, shortened: the demo runs every service on a synthetic territory
and every stage moves data."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from caremesh.settings import KafkaSettings

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def test_demo_runs_unattended_and_every_stage_moves_data(kafka: str, tmp_path) -> None:
    env = dict(
        os.environ,
        CAREMESH_KAFKA__BOOTSTRAP_SERVERS=kafka,
        # the running broker's own folder (its pid file), so the demo uses it, not a second one
        CAREMESH_KAFKA__LOCAL_DATA_DIR=str(KafkaSettings().local_data_dir),
        CAREMESH_STATE_DIR=str(tmp_path),
        COLUMNS="120",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "caremesh.cli.main",
            "demo",
            "--duration",
            "30",
            "--patients",
            "300",
            "--rate",
            "120",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    # The summary (stdout) and the end of the services' log lines (stderr) say what stalled.
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "every stage moved data" in out
    for stage in ("hl7v2", "validate", "share", "pathways", "research"):
        row = re.search(rf"│ {stage}\s+│\s+([\d,]+)", out)
        assert row is not None, stage
        assert int(row.group(1).replace(",", "")) > 0, stage
    assert re.search(r"pathway alerts raised\s+│\s+[1-9]", out)
    assert re.search(r"delivered to gp-0\d\s+│\s+[1-9]", out)
    assert "Inbox: http://127.0.0.1:" in out
    # gp-01's FHIR endpoint is a real HAPI FHIR server: it holds what was delivered
    held = re.search(r"held by HAPI FHIR \(gp-01\)\s+│\s+([\d,]+)", out)
    assert held is not None, "no HAPI FHIR server in the demo"
    assert int(held.group(1).replace(",", "")) > 0
    assert re.search(r"Patient [1-9]", out)
