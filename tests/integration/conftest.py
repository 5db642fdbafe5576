"""Integration fixtures: a private topic namespace per test and real caremesh processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from caremesh import topics
from tests.support.kafka import Namespace, Proc


@pytest.fixture
def namespace(kafka: str) -> Iterator[Namespace]:
    """Every catalogue topic under a unique prefix, deleted after the test."""
    ns = Namespace(kafka, f"t{uuid.uuid4().hex[:10]}.", partitions=3)
    specs = topics.catalogue(["org-a", "org-b", "org-c"], [("study-a", 30), ("study-b", 30)])
    topics.ensure_topics(
        kafka, specs, partitions=ns.partitions, replication_factor=1, prefix=ns.prefix
    )
    yield ns
    admin = AdminClient({"bootstrap.servers": kafka})
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(ns.prefix)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(timeout=30)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start `caremesh ARGS` subprocesses; each is stopped (and its pid checked) afterwards."""
    procs: list[Proc] = []

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
            [sys.executable, "-m", "caremesh.cli", *args],
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
