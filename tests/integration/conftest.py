"""Integration fixtures: a private topic namespace per test and real caremesh processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.kafka import SPAWNED, Namespace, Proc, make_namespace


@pytest.fixture
def namespace(kafka: str) -> Iterator[Namespace]:
    """Every catalogue topic under a unique prefix, deleted after the test."""
    with make_namespace(kafka) as ns:
        yield ns


@pytest.fixture
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Start `caremesh ARGS` subprocesses; each is stopped (and its pid checked) afterwards.

    When the test fails, its report shows each one's exit code and log tail."""
    procs: list[Proc] = []
    request.node.stash[SPAWNED] = procs

    def start(
        name: str,
        args: list[str],
        env: dict[str, str],
        wait_http: str | None = None,
        timeout: float = 90.0,
    ) -> Proc:
        log_path = tmp_path / f"{name}-{len(procs)}.log"
        out = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "caremesh.cli.main", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        proc = Proc(name, process, log_path)
        procs.append(proc)
        if wait_http:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"{name} exited early:\n{proc.log()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(wait_http, timeout=2).status_code < 500:
                        return proc
                time.sleep(0.3)
            pytest.fail(f"{name} did not answer {wait_http}:\n{proc.log()[-3000:]}")
        return proc

    yield start
    for proc in procs:
        if proc.process.poll() is None:
            proc.process.terminate()
    for proc in procs:
        try:
            proc.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait(timeout=10)
