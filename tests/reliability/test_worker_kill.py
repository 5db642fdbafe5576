"""A worker (validate, share, pathways, research) SIGKILLed at random moments of a stream (2):
no record lost at any output, no duplicate left after ce_id deduplication, and per-patient
order kept end to end.

The observations go through the real ingest API, each patient's in order (the next is sent
after the previous one's 202). The API writes them keyed by message id (DESIGN §2) into the
partition of their patient (`caremesh.connectors.ordering`), so the order of one patient's records,
first occurrences after `ce_id` deduplication, must equal the send order on clinical.fhir.v1,
on the outbox and on the research topic."""

from __future__ import annotations

import itertools
import json
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from caremesh import envelope
from caremesh.envelope import Envelope, child_message_id, message_id
from caremesh.fhir.recipient_ids import SOURCE_SYSTEM_PREFIX
from tests.reliability.pipeline import (
    MASTER_KEY,
    STUDIES,
    PatientSender,
    patient_ins,
    start_ingest_api,
    start_worker,
)
from tests.reliability.support import FULL, INS, header, read_all, size, wait_for
from tests.support.kafka import Namespace, Proc

pytestmark = [pytest.mark.kafka, pytest.mark.reliability]

# Each restart waits for the killed member's consumer session to expire before its partitions
# move; the test sets it to 6 s (the broker's minimum, group.min.session.timeout.ms), so a kill
# costs about 15 s. Five kills in quick succession used to make the Faust stages skip runs of
# records (see docs/operators/reliability.md, "Findings", and bench/faust_offsets.py).
KILLS = size(5, 5, "CAREMESH_RELIABILITY_KILLS")
SESSION_TIMEOUT = "6"
ORGS = json.dumps([{"id": "org-a", "subscriptions": ["Observation"]}])


def _source_id(resource: dict[str, object]) -> str:
    """The id the source gave a resource: recipients get it as an identifier (DESIGN §8)."""
    for identifier in resource.get("identifier") or []:  # type: ignore[attr-defined]
        if str(identifier.get("system", "")).startswith(SOURCE_SYSTEM_PREFIX):
            return str(identifier["value"])
    return str(resource["id"])


def _subject(p: int) -> dict[str, object]:
    return {"identifier": {"system": INS, "value": patient_ins(p)}}


def _care_team(p: int) -> dict[str, object]:
    return {
        "resourceType": "CareTeam",
        "id": f"ct-{p}",
        "status": "active",
        "subject": _subject(p),
        "participant": [{"member": {"reference": "Organization/org-a"}}],
    }


def _copd(p: int, now: datetime) -> dict[str, object]:
    return {
        "resourceType": "Condition",
        "id": f"dx-{p}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J44.1"}]},
        "subject": _subject(p),
        "onsetDateTime": (now - timedelta(days=30)).isoformat(),
    }


def _spo2(p: int, seq: int, now: datetime) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"spo2-{p}-{seq}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": _subject(p),
        "effectiveDateTime": (now - timedelta(hours=10) + timedelta(seconds=seq)).isoformat(),
        "valueQuantity": {
            "value": 86,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
    }


def _record(resource: dict[str, object]) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """As the ingest API writes it: keyed by message id."""
    mid = f"msg-{resource['id']}"
    env = Envelope(
        mid, "urn:caremesh:source:hosp-r", envelope.fhir_event_type(str(resource["resourceType"]))
    )
    headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
    return mid.encode(), orjson.dumps(resource), headers


def _inversions(seqs: list[int]) -> int:
    """Adjacent pairs out of order in a patient's sequence."""
    return sum(1 for a, b in itertools.pairwise(seqs) if b < a)


def _first_seen_order(msgs: list, seq_of: Callable[[object], int | None]) -> dict[bytes, list[int]]:
    """Per key, the observation sequence numbers in topic order, duplicates (same ce_id) dropped."""
    seen: set[str] = set()
    out: dict[bytes, list[int]] = defaultdict(list)
    for m in msgs:
        ce_id = header(m, envelope.H_ID) or ""
        if ce_id in seen:
            continue
        seen.add(ce_id)
        seq = seq_of(m)
        if seq is not None:
            out[m.key()].append(seq)
    return out


@pytest.mark.timeout(1200)
def test_worker_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    patients = size(20, 100)
    per_patient = size(40, 100)
    ns = namespace
    now = datetime.now(UTC)
    env = {
        "CAREMESH_ORGANISATIONS": ORGS,
        "CAREMESH_STUDIES": STUDIES,
        "CAREMESH_PSEUDONYM__MASTER_KEY": MASTER_KEY,
        "CAREMESH_PATHWAYS__COORDINATORS": '{"copd": "Organization/org-a"}',
        "CAREMESH_WORKER__SESSION_TIMEOUT_SECONDS": SESSION_TIMEOUT,
    }
    stages = ["validate", "share", "pathways", "research"]
    _, url = start_ingest_api(spawn, ns)
    worker = start_worker(spawn, ns, stages, tmp_path / "w0", **env)

    # Care teams and enrolments first (their order relative to observations is not the point).
    setup = [_record(_care_team(p)) for p in range(patients)]
    setup += [_record(_copd(p, now)) for p in range(patients)]
    ns.produce("ingest.fhir.v1", setup)
    wait_for(
        lambda: len(read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=1)) >= len(setup),
        120,
        "care teams and conditions validated",
        1,
    )
    streams = {p: [_spo2(p, seq, now) for seq in range(per_patient)] for p in range(patients)}
    # Slow enough that the stream outlasts the kills (each restart takes a session timeout plus
    # the worker's start); the rest goes at full speed once the kills are done.
    sender = PatientSender(url, streams, threads=4, pace=[0.6 if not FULL else 0.05])
    sender.start()
    rng = random.Random()
    kill_marks = []
    for k in range(KILLS):
        time.sleep(rng.uniform(0.5, 4.0))
        kill_marks.append(sender.sent[0])
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)
        worker = start_worker(spawn, ns, stages, tmp_path / f"w{k + 1}", **env)
    sender.pace[0] = 0.0
    sender.join(timeout=600)
    killed_mid_stream = sum(1 for mark in kill_marks if mark < sender.total)

    # Every observation's ids along the pipeline, from its Idempotency-Key (the ingest API's
    # message id), to recognise each one at every output and know its place in the send order.
    research_ce: dict[str, int] = {}
    for stream in streams.values():
        for seq, resource in enumerate(stream):
            clinical_ce = child_message_id(message_id("hosp-r", str(resource["id"])), 0)
            research_ce[child_message_id(clinical_ce, "study-b")] = seq

    expected_obs = {f"spo2-{p}-{s}" for p in range(patients) for s in range(per_patient)}
    expected_clinical = len(setup) + sender.total
    outputs: dict[str, list] = {}

    def complete() -> bool:
        for name in (
            "clinical.fhir.v1",
            "outbox.org-a.v1",
            "research.study-b.v1",
            "pathway.alerts.v1",
        ):
            outputs[name] = read_all(ns.kafka, ns.topic(name), settle=2)
        outbox_ids = {_source_id(orjson.loads(m.value())) for m in outputs["outbox.org-a.v1"]}
        research = {header(m, envelope.H_ID) for m in outputs["research.study-b.v1"]}
        alerted = {m.key() for m in outputs["pathway.alerts.v1"]}
        status[0] = (
            f"clinical={len({header(m, envelope.H_ID) for m in outputs['clinical.fhir.v1']})}"
            f"/{expected_clinical} outbox-missing={len(expected_obs - outbox_ids)} "
            f"research={len(research)}/{expected_clinical} alerted={len(alerted)}/{patients}"
        )
        return (
            expected_obs <= outbox_ids
            and len(research) >= expected_clinical
            and len(alerted) >= patients
        )

    status = [""]
    try:
        wait_for(complete, 240, "every output complete", 3)
    except AssertionError:
        raise AssertionError(f"outputs incomplete after 240 s: {status[0]}") from None
    clinical, outbox = outputs["clinical.fhir.v1"], outputs["outbox.org-a.v1"]
    research, alerts = outputs["research.study-b.v1"], outputs["pathway.alerts.v1"]

    def rid(m: object) -> str:
        return _source_id(orjson.loads(m.value()))  # type: ignore[attr-defined]

    def obs_seq(m: object) -> int | None:
        resource_id = rid(m)
        return int(resource_id.rsplit("-", 1)[1]) if resource_id.startswith("spo2-") else None

    outbox_ids = {rid(m) for m in outbox}
    outbox_ce = defaultdict(set)
    for m in outbox:
        outbox_ce[rid(m)].add(header(m, envelope.H_ID))
    research_ids = {header(m, envelope.H_ID) for m in research}
    alert_ids: dict[bytes, set[str]] = defaultdict(set)
    for m in alerts:
        alert_ids[m.key()].add(rid(m))
    lost = {
        "outbox": len(expected_obs - outbox_ids),
        "research": max(0, expected_clinical - len(research_ids)),
        "research-observations": len(set(research_ce) - research_ids),
        "alerts": patients - len(alert_ids),
    }
    dupes_after_dedup = {
        "outbox": sum(len(c) - 1 for c in outbox_ce.values()),
        "research": len(research_ids) - expected_clinical,
        "alerts": sum(len(ids) - 1 for ids in alert_ids.values()),
    }
    repeats = {
        "clinical": len(clinical) - len({header(m, envelope.H_ID) for m in clinical}),
        "outbox": len(outbox) - len(outbox_ce),
        "research": len(research) - len(research_ids),
        "alerts": len(alerts) - len(alert_ids),
    }
    # Per-patient order: first occurrences (after ce_id dedup) in topic order, per record key
    # (patient key on clinical and outbox, study pseudonym on the research topic).
    orders = {
        "clinical": _first_seen_order(clinical, obs_seq),
        "outbox": _first_seen_order(outbox, obs_seq),
        "research": _first_seen_order(
            research,
            lambda m: research_ce.get(header(m, envelope.H_ID) or ""),  # type: ignore[arg-type]
        ),
    }
    inversions = {
        name: sum(_inversions(s) for s in by_key.values()) for name, by_key in orders.items()
    }
    out_of_order = {
        name: sum(1 for s in by_key.values() if s != sorted(s)) for name, by_key in orders.items()
    }
    complete_streams = {
        name: sum(1 for s in by_key.values() if len(s) == per_patient)
        for name, by_key in orders.items()
    }
    print(
        f"\n[worker SIGKILL x{KILLS}, session timeout {SESSION_TIMEOUT}s] patients={patients} "
        f"records={expected_clinical} kills-mid-stream={killed_mid_stream} "
        f"at-records={kill_marks} http={sender.statuses} lost={lost} "
        f"duplicates-after-dedup={dupes_after_dedup} same-id-repeats={repeats} "
        f"order-inversions={inversions} patients-out-of-order={out_of_order}"
    )
    assert killed_mid_stream >= 1, "every kill came after the stream ended; make it longer"
    assert lost == {"outbox": 0, "research": 0, "research-observations": 0, "alerts": 0}
    assert dupes_after_dedup == {"outbox": 0, "research": 0, "alerts": 0}
    # Every patient's whole stream is seen under one key at each output (one partition) ...
    assert complete_streams == dict.fromkeys(orders, patients), complete_streams
    # ... in the order the sender got its 202s.
    unordered = {
        name: {k.decode(): s for k, s in by_key.items() if s != sorted(s)}
        for name, by_key in orders.items()
    }
    first = next(((n, k, s) for n, u in unordered.items() for k, s in u.items()), None)
    assert inversions == {"clinical": 0, "outbox": 0, "research": 0}, (
        f"first out-of-order stream: {first}"
    )
