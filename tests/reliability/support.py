"""Reliability helpers: sizes, the private broker handle, readers, waits and measurements.

Sizes are small in CI; `CAREMESH_RELIABILITY_FULL=1` selects the issue's full figures. Faults go
only to processes these tests started, addressed by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from caremesh import envelope
from caremesh.kafka import config as kafka_config
from caremesh.kafka.local import LocalKafka

FULL = os.environ.get("CAREMESH_RELIABILITY_FULL", "") in {"1", "true", "yes"}
INS = "urn:oid:1.2.250.1.213.1.4.8"


def size(ci: int, full: int, env: str | None = None) -> int:
    """A test's N: `env` overrides, else the full figure on demand, else the CI figure."""
    if env and os.environ.get(env):
        return int(os.environ[env])
    return full if FULL else ci


def pause_seconds() -> float:
    """How long test 3 keeps the broker stopped (CAREMESH_RELIABILITY_PAUSE_SECONDS): in CI
    too, longer than the broker's session with its controller (9 s), so the broker is fenced
    and unfenced on resume, the case that stopped a worker before."""
    return float(os.environ.get("CAREMESH_RELIABILITY_PAUSE_SECONDS") or (30 if FULL else 15))


@dataclass
class PrivateBroker:
    """A broker of our own on free ports, which tests may SIGKILL, SIGSTOP and restart."""

    local: LocalKafka
    bootstrap: str

    @property
    def pid(self) -> int:
        """The pid the broker recorded (read from its pid file: no request to the broker)."""
        pid = int(self.local.pid_file.read_text().strip())
        assert not _zombie(pid), "the private broker is not running"
        return pid

    def kill(self) -> float:
        """SIGKILL the broker; returns the monotonic time of the signal."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if _zombie(pid):
                return killed_at
            time.sleep(0.05)
        raise AssertionError("the private broker survived SIGKILL")

    def pause(self) -> float:
        """SIGSTOP the broker and wait until every one of its threads is stopped; returns the
        monotonic time from which it answers nothing.

        `kill` returns once the signal is queued, not once the process stopped: one thread is
        woken to start the group stop, and on a busy machine another thread, woken by a request,
        can still run and answer it before that (seen in CI as an acknowledgement "during" the
        pause)."""
        pid = self.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while not _all_threads_stopped(pid):
            assert time.monotonic() < deadline, "the private broker did not stop on SIGSTOP"
            time.sleep(0.01)
        return time.monotonic()

    def resume(self) -> float:
        """SIGCONT the broker; returns the monotonic time read just before the signal (once it
        runs again it may answer before this thread reads the clock)."""
        pid = self.pid
        resumed_at = time.monotonic()
        os.kill(pid, signal.SIGCONT)
        return resumed_at

    def start(self) -> None:
        self.local.up(wait=120)


def _all_threads_stopped(pid: int) -> bool:
    """True when every thread of the process is in the stopped state ("T")."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError, IndexError):  # a thread that just ended
            states.append(stat.read_text().split(") ", 1)[1][:1])
    return bool(states) and all(state == "T" for state in states)


def _zombie(pid: int) -> bool:
    """True when the process is gone or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def read_all(
    bootstrap: str, topic: str, *, settle: float = 3.0, timeout: float = 90.0
) -> list[Message]:
    """Every record of `topic` from offset 0, until none came for `settle` seconds."""
    consumer = Consumer(
        kafka_config.consumer_config(bootstrap, f"reader-{uuid.uuid4().hex}", log_level=0)
    )
    meta = consumer.list_topics(topic, timeout=30)
    parts = list(meta.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < settle:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append(msg)
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    every: float = 1.0,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll until `predicate` holds; on timeout, fail with `explain()` (what is still missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    detail = f"\n{explain()}" if explain is not None else ""
    raise AssertionError(f"timed out waiting for {what}{detail}")


def wait_http(url: str, timeout: float = 90.0) -> None:
    def answers() -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(url, timeout=2).status_code < 500
        return False

    wait_for(answers, timeout, url, every=0.3)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def header(msg: Message, name: str) -> str | None:
    return envelope.header_value(msg.headers(), name)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
