"""Shared fixtures: the real local broker and factories for uniquely named topics and groups.

Tests that need Kafka take the `kafka` fixture. When no broker answers they are skipped on a
developer machine, and fail under CI=true: CI never passes because a broker was missing.
Tests that need a provider's real FHIR server take `hapi_r4` or `hapi_r5` (tests/support/hapi.py),
under the same rule.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

pytest_plugins = ["tests.support.hapi"]  # the HAPI FHIR fixtures: hapi_r4, hapi_r5

BOOTSTRAP = os.environ.get("CAREMESH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def _broker_answers(bootstrap: str) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=5)
    except KafkaException:
        return False
    return True


SPAWNED_LOG_LINES = 40


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed test's report shows how the processes it started were doing: each one's exit code
    (or "running") and the tail of its log. Service logs carry no payload or identifier."""
    report: pytest.TestReport = yield
    from tests.support.kafka import SPAWNED

    procs = item.stash.get(SPAWNED, [])
    if report.failed and report.when == "call" and procs:
        parts = []
        for proc in procs:
            code = proc.process.poll()
            try:
                tail = proc.log().splitlines()[-SPAWNED_LOG_LINES:]
            except OSError as exc:
                tail = [f"(log not readable: {type(exc).__name__})"]
            state = "running" if code is None else f"exited {code}"
            parts.append(
                f"--- {proc.name} (pid {proc.process.pid}, {state}) ---\n" + "\n".join(tail)
            )
        report.sections.append(("processes started by the test", "\n".join(parts)))
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """For `pytest -n N --dist loadgroup` (scripts/test.sh): each file's tests run in one
    worker, so a module's fixtures (a private broker, a browser) start once, and every test of
    the secured broker goes to one worker, which starts that broker once. Without xdist the
    marks change nothing."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = "secured-broker" if "secured_broker" in fixtures else item.path.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def kafka() -> str:
    """The bootstrap address of the real broker (`caremesh kafka up`)."""
    if not _broker_answers(BOOTSTRAP):
        message = f"no Kafka broker answers on {BOOTSTRAP}; run `caremesh kafka up`"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return BOOTSTRAP


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names for topics, groups and app ids of one test."""
    run = uuid.uuid4().hex[:10]
    return lambda base: f"t.{base}.{run}"


@pytest.fixture
def new_topic(kafka: str, unique: Callable[[str], str]) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; they are deleted afterwards."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka})
    created: list[str] = []

    def make(base: str = "topic", partitions: int = 6) -> str:
        name = unique(base)
        fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        fut[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for fut in admin.delete_topics(created, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # best-effort clean-up
                fut.result(timeout=30)
