"""Broker faults on a private broker: SIGKILL then restart under HTTP load (1), and SIGSTOP then
SIGCONT (3). Nothing acknowledged is lost, nothing is acknowledged while the broker is down, and
the pipeline recovers without restarting its own processes."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from caremesh import envelope
from tests.reliability.pipeline import MASTER_KEY, STUDIES, Sender, start_ingest_api, start_worker
from tests.reliability.support import (
    PrivateBroker,
    header,
    pause_seconds,
    read_all,
    size,
    wait_for,
)
from tests.support.kafka import Namespace, Proc

pytestmark = [pytest.mark.kafka, pytest.mark.reliability]

PATIENTS = 50


def _clinical_ids(ns: Namespace) -> tuple[dict[int, set[str]], int]:
    """obs index → set of ce_ids seen on clinical.fhir.v1, and the raw record count."""
    seen: dict[int, set[str]] = defaultdict(set)
    msgs = read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=2)
    for m in msgs:
        rid = str(orjson.loads(m.value())["id"])
        seen[int(rid.removeprefix("obs-"))].add(header(m, envelope.H_ID) or "")
    return seen, len(msgs)


@pytest.mark.timeout(900)
def test_broker_sigkill_under_http_load_loses_no_acknowledged_resource(
    private_broker: PrivateBroker,
    private_namespace: Namespace,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    n = size(600, 20_000, "CAREMESH_RELIABILITY_N")
    ns = private_namespace
    api, url = start_ingest_api(spawn, ns)
    worker = start_worker(spawn, ns, ["validate"], tmp_path / "worker")
    sender = Sender(url, PATIENTS, threads=6)
    sender.start(range(n))
    wait_for(lambda: len(sender.acked) >= n // 3, 180, "a third of the resources acknowledged", 0.2)

    killed_at = private_broker.kill()
    acked_at_kill = len(sender.acked)
    # Keep the broker down until the API has answered several requests that began after the kill.
    wait_for(
        lambda: sum(1 for a in sender.answers if a.started > killed_at and a.status) >= 6,
        90,
        "answers while the broker is down",
        0.5,
    )
    restart_at = time.monotonic()
    private_broker.start()
    up_at = time.monotonic()
    sender.join(timeout=300)

    during = [a for a in sender.answers if a.started > killed_at and a.ended < restart_at]
    statuses = sorted({a.status for a in during})
    acked_while_down = [a for a in during if a.status == 202]
    assert during, "no request was answered while the broker was down"
    assert acked_while_down == []  # never 202 without the broker
    assert set(statuses) <= {503}, statuses
    assert len(sender.acked) == n
    assert api.process.poll() is None
    assert worker.process.poll() is None

    seen: dict[int, set[str]] = {}
    raw = 0

    def all_there() -> bool:
        nonlocal seen, raw
        seen, raw = _clinical_ids(ns)
        return sender.acked <= set(seen)

    wait_for(all_there, 180, "every acknowledged resource on clinical.fhir.v1", 1)
    missing = sender.acked - set(seen)
    distinct_ids = sum(len(ids) for ids in seen.values())
    duplicates_after_dedup = distinct_ids - len(seen)
    print(
        f"\n[broker SIGKILL] N={n} acked={len(sender.acked)} acked-before-kill={acked_at_kill} "
        f"answers-while-down={len(during)} (503: {sum(a.status == 503 for a in during)}) "
        f"broker-down={restart_at - killed_at:.1f}s restart={up_at - restart_at:.1f}s "
        f"http-retries={sum(a.status != 202 for a in sender.answers)} "
        f"clinical-records={raw} missing={len(missing)} "
        f"duplicates-after-ce_id-dedup={duplicates_after_dedup} "
        f"same-id-repeats={raw - distinct_ids}"
    )
    assert missing == set()
    assert duplicates_after_dedup == 0


@pytest.mark.timeout(900)
def test_broker_paused_then_resumed_loses_nothing_and_recovers_without_restart(
    private_broker: PrivateBroker,
    private_namespace: Namespace,
    spawn: Callable[..., Proc],
    tmp_path: Path,
) -> None:
    n = size(300, 5_000, "CAREMESH_RELIABILITY_PAUSE_N")
    pause = pause_seconds()
    ns = private_namespace
    api, url = start_ingest_api(spawn, ns)
    worker = start_worker(
        spawn,
        ns,
        ["validate", "research"],
        tmp_path / "worker",
        CAREMESH_STUDIES=STUDIES,
        CAREMESH_PSEUDONYM__MASTER_KEY=MASTER_KEY,
    )
    sender = Sender(url, PATIENTS, threads=4)
    first, rest = range(n // 2), range(n // 2, n)
    sender.start(first, pace=0.01)
    wait_for(lambda: len(sender.acked) >= n // 4, 120, "a quarter acknowledged", 0.2)

    stopped_at = private_broker.pause()
    time.sleep(pause)
    resumed_at = private_broker.resume()
    sender.join(timeout=300)
    # After the pause, new traffic flows through the same processes.
    sender2 = Sender(url, PATIENTS, threads=4)
    sender2.start(rest)
    sender2.join(timeout=300)
    acked = sender.acked | sender2.acked
    assert len(acked) == n
    assert api.process.poll() is None, api.log()[-3000:]
    assert worker.process.poll() is None, worker.log()[-4000:]
    during = [a for a in sender.answers if a.started > stopped_at and a.ended < resumed_at]
    early = [
        (a.index, round(a.started - stopped_at, 3), round(a.ended - stopped_at, 3))
        for a in during
        if a.status == 202
    ]
    assert early == [], f"acknowledged while the broker was stopped ({pause:.0f}s pause)"

    seen: dict[int, set[str]] = {}
    research: set[str] = set()

    def all_there() -> bool:
        nonlocal seen, research
        seen, _ = _clinical_ids(ns)
        msgs = read_all(ns.kafka, ns.topic("research.study-b.v1"), settle=2)
        research = {header(m, envelope.H_ID) or "" for m in msgs}
        return acked <= set(seen) and len(research) >= len(acked)

    wait_for(all_there, 240, "every acknowledged resource on clinical and research topics", 2)
    missing = acked - set(seen)
    print(
        f"\n[broker SIGSTOP] N={n} pause={pause:.0f}s acked={len(acked)} "
        f"answers-during-pause={len(during)} 503s={sender.count(503)} "
        f"transport-errors={sender.count(0)} clinical-missing={len(missing)} "
        f"research-records={len(research)} research-missing={len(acked) - len(research)} "
        f"processes-restarted=0"
    )
    assert missing == set()
    assert len(research) == len(acked)
