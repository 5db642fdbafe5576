"""Reliability fixtures: a private broker that tests may kill or pause, and its namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from caremesh.kafka.local import LocalKafka
from caremesh.settings import KafkaSettings
from tests.integration.conftest import namespace, spawn  # noqa: F401 - shared fixtures
from tests.reliability.support import PrivateBroker
from tests.support.kafka import Namespace, free_port, make_namespace


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    """A single-node KRaft broker on its own ports and data dir, stopped by pid afterwards."""
    data = tmp_path_factory.mktemp("kafka")
    settings = KafkaSettings(
        local_port=free_port(),
        local_controller_port=free_port(),
        local_data_dir=data,
        local_heap="512m",
    )
    local = LocalKafka(settings)
    local.up(wait=120)
    try:
        yield PrivateBroker(local, local.bootstrap)
    finally:
        with contextlib.suppress(Exception):
            os.kill(local.status().pid or 0, signal.SIGCONT)  # in case a test left it paused
        local.down()


@pytest.fixture
def private_namespace(private_broker: PrivateBroker) -> Iterator[Namespace]:
    """Every catalogue topic under a unique prefix, on the private broker."""
    with make_namespace(private_broker.bootstrap) as ns:
        yield ns
