"""Broker faults on a private three-node cluster (replication factor 3, min.insync.replicas 2):
a SIGKILL of the leader of an ingest partition under HTTP load, then a rolling restart of the
three brokers. With two brokers left, senders see nothing: no 503, nothing acknowledged lost, no
duplicate after ce_id dedup on clinical.fhir.v1."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from caremesh import envelope
from tests.reliability.pipeline import Sender, start_ingest_api, start_worker
from tests.reliability.support import header, read_all, size, wait_for
from tests.support.cluster import Cluster, kafka_cluster  # noqa: F401 - the fixture
from tests.support.kafka import Namespace, Proc, make_namespace

pytestmark = [pytest.mark.kafka, pytest.mark.reliability]

PATIENTS = 50


@pytest.fixture
def cluster_namespace(kafka_cluster: Cluster) -> Iterator[Namespace]:  # noqa: F811
    """Every catalogue topic under a unique prefix, replicated as the cluster asks (3 / 2)."""
    with make_namespace(kafka_cluster.bootstrap, replication_factor=None) as ns:
        yield ns


def _clinical(ns: Namespace) -> tuple[dict[int, set[str]], int]:
    """obs index → ce_ids seen on clinical.fhir.v1, and the raw record count."""
    seen: dict[int, set[str]] = defaultdict(set)
    msgs = read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=2)
    for m in msgs:
        rid = str(orjson.loads(m.value())["id"])
        seen[int(rid.removeprefix("obs-"))].add(header(m, envelope.H_ID) or "")
    return seen, len(msgs)


def _check_delivered(ns: Namespace, sender: Sender) -> tuple[int, int, int]:
    """Wait for every acknowledged resource on clinical.fhir.v1; (missing, duplicates after
    ce_id dedup, raw records)."""
    seen: dict[int, set[str]] = {}
    raw = 0

    def all_there() -> bool:
        nonlocal seen, raw
        seen, raw = _clinical(ns)
        return sender.acked <= set(seen)

    wait_for(all_there, 120, "every acknowledged resource on clinical.fhir.v1", 1)
    missing = len(sender.acked - set(seen))
    duplicates = sum(len(ids) for ids in seen.values()) - len(seen)
    return missing, duplicates, raw


def _start(
    ns: Namespace, spawn: Callable[..., Proc], tmp_path: Path, n: int
) -> tuple[Proc, Proc, Sender]:
    api, url = start_ingest_api(spawn, ns)
    worker = start_worker(spawn, ns, ["validate"], tmp_path / "worker")
    sender = Sender(url, PATIENTS, threads=4)
    sender.start(range(n), pace=0.25)
    return api, worker, sender


@pytest.mark.timeout(600)
def test_sigkill_of_the_ingest_leader_is_invisible_to_senders(
    kafka_cluster: Cluster,  # noqa: F811
    cluster_namespace: Namespace,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    n = size(400, 10_000, "CAREMESH_RELIABILITY_CLUSTER_N")
    ns = cluster_namespace
    ingest = ns.topic("ingest.fhir.v1")
    api, worker, sender = _start(ns, spawn, tmp_path, n)
    wait_for(lambda: len(sender.acked) >= n // 3, 120, "a third acknowledged", 0.2)

    victim = kafka_cluster.leader(ingest, 0)
    killed_at = kafka_cluster.kill(victim)
    acked_at_kill = len(sender.acked)
    wait_for(
        lambda: kafka_cluster.leader(ingest, 0) not in (victim, -1),
        60,
        "a new leader for the ingest partition",
        0.2,
    )
    moved_after = time.monotonic() - killed_at
    # Two brokers carry the rest of the load (or 20 s of it), then the third comes back.
    wait_for(
        lambda: len(sender.acked) >= n or time.monotonic() - killed_at > 20,
        120,
        "load on two brokers",
        0.5,
    )
    acked_on_two = len(sender.acked) - acked_at_kill
    restart_at = time.monotonic()
    kafka_cluster.start(victim)
    back_after = time.monotonic() - restart_at
    sender.join(timeout=180)

    assert len(sender.acked) == n
    assert api.process.poll() is None, api.log()[-3000:]
    assert worker.process.poll() is None, worker.log()[-3000:]
    missing, duplicates, raw = _check_delivered(ns, sender)
    refused = sender.count(503)
    print(
        f"\n[cluster leader SIGKILL] N={n} acked={len(sender.acked)} broker={victim} "
        f"acked-before-kill={acked_at_kill} acked-on-two-brokers={acked_on_two} "
        f"leader-move={moved_after:.1f}s restart={back_after:.1f}s 503s={refused} "
        f"transport-errors={sender.count(0)} clinical-records={raw} missing={missing} "
        f"duplicates-after-ce_id-dedup={duplicates}"
    )
    assert acked_on_two > 0
    assert refused == 0
    assert sender.count(0) == 0
    assert missing == 0
    assert duplicates == 0


@pytest.mark.timeout(600)
def test_rolling_restart_of_the_three_brokers_is_invisible_to_senders(
    kafka_cluster: Cluster,  # noqa: F811
    cluster_namespace: Namespace,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    """Each broker in turn: SIGTERM (a controlled shutdown moves its leaders first), restart,
    and wait until every replica is back in sync before the next one, as an operator would."""
    restarts = size(1, 2, "CAREMESH_RELIABILITY_CLUSTER_ROUNDS")
    ns = cluster_namespace
    api, worker, sender = _start(ns, spawn, tmp_path, 1_000_000)
    wait_for(lambda: len(sender.acked) >= 50, 120, "load flowing", 0.2)
    wait_for(kafka_cluster.in_sync, 120, "every replica in sync before the restart", 0.5)
    started_at = time.monotonic()
    steps: list[str] = []  # per broker: stop + start + back in sync
    for _ in range(restarts):
        for broker in (1, 2, 3):
            stop_at = time.monotonic()
            kafka_cluster.stop(broker)
            start_at = time.monotonic()
            kafka_cluster.start(broker)
            sync_at = time.monotonic()
            wait_for(kafka_cluster.in_sync, 180, f"broker {broker} back in sync", 0.5)
            synced = time.monotonic() - sync_at
            steps.append(f"{start_at - stop_at:.1f}+{sync_at - start_at:.1f}+{synced:.1f}s")
    rolled = time.monotonic() - started_at
    acked_during = len(sender.acked)
    sender.stop()

    assert api.process.poll() is None, api.log()[-3000:]
    assert worker.process.poll() is None, worker.log()[-3000:]
    missing, duplicates, raw = _check_delivered(ns, sender)
    refused = sender.count(503)
    print(
        f"\n[cluster rolling restart] rounds={restarts} acked={len(sender.acked)} "
        f"acked-by-end-of-roll={acked_during} roll={rolled:.1f}s "
        f"stop+start+in-sync={'/'.join(steps)} 503s={refused} "
        f"transport-errors={sender.count(0)} clinical-records={raw} missing={missing} "
        f"duplicates-after-ce_id-dedup={duplicates}"
    )
    assert refused == 0
    assert sender.count(0) == 0
    assert missing == 0
    assert duplicates == 0
