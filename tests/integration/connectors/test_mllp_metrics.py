"""The MLLP listener process serves /health and /metrics over HTTP, counting what it handled."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from caremesh.connectors.mllp_framing import END, frame
from tests.support.kafka import Namespace, Proc, free_port
from tests.unit.connectors.connectors_synth import hl7

pytestmark = pytest.mark.kafka


def _send(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(frame(message))
        answer = b""
        while not answer.endswith(END):
            chunk = sock.recv(4096)
            assert chunk, "connection closed before the ACK"
            answer += chunk
    return answer


def _counter(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_mllp_listener_serves_metrics_and_health(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    mllp_port, metrics_port = free_port(), free_port()
    env = namespace.env(
        CAREMESH_MLLP__PORT=str(mllp_port), CAREMESH_MLLP__METRICS_PORT=str(metrics_port)
    )
    base = f"http://127.0.0.1:{metrics_port}"
    proc = spawn("mllp", ["mllp"], env, wait_http=f"{base}/health")
    assert httpx.get(f"{base}/health", timeout=5).json() == {"status": "ok"}
    before = httpx.get(f"{base}/metrics", timeout=5)
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")

    assert b"MSA|AA|" in _send(mllp_port, hl7("ADT^A01", "MTR0001"))
    assert b"MSA|AR|" in _send(mllp_port, hl7("ZZZ^Z99", "MTR0002"))

    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"{base}/metrics", timeout=5).text
        accepted = _counter(text, "caremesh_messages_out_total", component="mllp")
        refused = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("caremesh_messages_rejected_total{") and 'component="mllp"' in line
        )
        if (accepted, refused) == (1.0, 1.0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (accepted, refused) == (1.0, 1.0), text
    assert "MTR000" not in text  # no control id or payload in any label
    proc.process.terminate()
    assert proc.process.wait(timeout=30) == 0
