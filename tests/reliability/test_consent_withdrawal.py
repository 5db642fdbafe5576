"""Consent withdrawn while resources flow (5), then a replay from offset 0 (6).

(5) Patients give a consent (a root `permit`), their resources flow to an organisation's outbox
and to two studies, and half of them withdraw it, one after the other, while resources keep
flowing at a steady rate. Each withdrawal's *effect point* is the moment the test got the
consent API's 200 (the API answers only after Kafka acknowledged the ledger record). Right
after it the test reads the end offset of every ingest.fhir.v1 partition: a resource whose
ingest record has an offset at or past that end offset in its partition was appended after
the effect point. "After" is thus defined by ledger order, not by clocks: it is exactly the
set of records the platform promises to withhold (DESIGN §5: a withdrawal acknowledged before
a resource arrived applies to that resource). Records appended in the few milliseconds between
the 200 and the offset read count as before, so the check never accuses the platform wrongly,
and the test asserts that every withdrawn patient did send resources after the effect point,
so it cannot pass for want of them. Asserted: 0 such records of withdrawn patients in the
research topics and in the outbox; a retraction in each study for 100% of the withdrawn
patients; nothing lost for the others. Printed: the effect latency (effect point → the
retraction on each study topic, and → the research stage's first deny decision), p50/p99.

(6) Then the worker stops and a fresh one, with a fresh application id (fresh consumer groups
and table changelogs), runs the share and research stages from offset 0 of clinical.fhir.v1
and the ledger, appending to the same output topics. What it appends equals the expected set
(every clinical record of the patients who did not withdraw, one per `ce_id`) with the same
pseudonyms and the same pseudonymised bytes as the first run, and nothing of the withdrawn
patients (no retraction either: nothing of theirs is released, so nothing is retracted).

CI: 24 patients, 12 withdrawals over 6 s, 300 resources/s. `CAREMESH_RELIABILITY_FULL=1`: 200
patients, 100 withdrawals over 30 s, 2,000 resources/s (`CAREMESH_RELIABILITY_RATE`,
`CAREMESH_RELIABILITY_WITHDRAWALS` override).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from caremesh import envelope
from caremesh.connectors.ordering import ingest_partition
from caremesh.envelope import Envelope, child_message_id
from caremesh.kafka import config as kafka_config
from tests.reliability.pipeline import MASTER_KEY, patient_ins, start_worker
from tests.reliability.support import (
    FULL,
    INS,
    header,
    percentile,
    read_all,
    size,
    wait_for,
    wait_http,
)
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.unit.consent.consent_builders import provision, r4_consent

pytestmark = [pytest.mark.kafka, pytest.mark.reliability]

WITHDRAWALS = size(12, 100, "CAREMESH_RELIABILITY_WITHDRAWALS")
PATIENTS = 2 * WITHDRAWALS
RATE = size(300, 2000, "CAREMESH_RELIABILITY_RATE")
ADMIN_TOKEN = "synthetic-admin-token-r5"
SOURCE = "urn:caremesh:source:hosp-r"
STUDY_IDS = ("study-a", "study-b")
STUDIES = json.dumps(
    [
        {"id": "study-a", "purpose": "HRESCH", "consent_default": "deny"},
        {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"},
    ]
)
ORGS = json.dumps([{"id": "org-a", "subscriptions": ["Observation"]}])
RETRACTION_TYPE = "org.caremesh.research.retraction"
WORKER_ENV = {
    "CAREMESH_ORGANISATIONS": ORGS,
    "CAREMESH_STUDIES": STUDIES,
    "CAREMESH_PSEUDONYM__MASTER_KEY": MASTER_KEY,
    "CAREMESH_WORKER__SESSION_TIMEOUT_SECONDS": "6",
}


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


def _obs(i: int, p: int) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"o-{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": _subject(p),
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org"},
    }


class Feed:
    """Writes resources to ingest.fhir.v1 as the ingest API does (key = message id, partition =
    patient) and records where each one landed (message id → partition, offset)."""

    def __init__(self, ns: Namespace) -> None:
        self.topic = ns.topic("ingest.fhir.v1")
        self.producer = Producer(kafka_config.producer_config(ns.kafka))
        self.partitions = ns.partitions
        self.landed: dict[str, tuple[int, int]] = {}
        self.patient_of: dict[str, int] = {}
        self.errors: list[str] = []
        self.sent = 0

    def send(self, resource: dict[str, object], p: int) -> None:
        mid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"r5/{resource['id']}"))
        env = Envelope(mid, SOURCE, envelope.fhir_event_type(str(resource["resourceType"])))
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]
        self.patient_of[mid] = p
        partition = ingest_partition(patient_ins(p), mid.encode(), self.partitions)

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(err.name())
            else:
                self.landed[mid] = (msg.partition() or 0, msg.offset() or 0)

        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=mid.encode(),
                    value=orjson.dumps(resource),
                    headers=headers,
                    partition=partition,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        self.sent += 1

    def flush(self) -> None:
        assert self.producer.flush(60) == 0
        assert self.errors == []


def _end_offsets(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    return {
        p: int(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
        )
        for p in range(partitions)
    }


def _start_consent_api(spawn: Callable[..., Proc], ns: Namespace) -> str:
    port = free_port()
    spawn(
        "consent-api",
        ["consent-api"],
        ns.env(
            CAREMESH_CONSENT_API__ADMINS=json.dumps({"admin": ADMIN_TOKEN}),
            CAREMESH_CONSENT_API__PORT=str(port),
        ),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health")
    return url


def _ms(values: list[float]) -> str:
    return (
        f"p50={percentile(values, 0.5) * 1000:.0f} ms p99={percentile(values, 0.99) * 1000:.0f} ms"
    )


@pytest.mark.timeout(1200)
def test_withdrawal_under_load_then_replay_from_offset_0(
    namespace: Namespace, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    ns = namespace
    consent_url = _start_consent_api(spawn, ns)
    worker = start_worker(
        spawn, ns, ["validate", "share", "research"], tmp_path / "w", **WORKER_ENV
    )
    api = httpx.Client(
        base_url=consent_url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    for p in range(PATIENTS):
        consent = r4_consent(f"c-{p}", provision("permit"))
        consent["patient"] = _subject(p)
        r = api.post(
            "/Consent",
            content=orjson.dumps(consent),
            headers={"Content-Type": "application/fhir+json"},
        )
        assert r.status_code == 201, r.text

    # Warm-up: a care team and one observation per patient, released to both studies, so each
    # patient has a pseudonym per study and the research stage has them as "released".
    feed = Feed(ns)
    for p in range(PATIENTS):
        feed.send(_care_team(p), p)
    feed.flush()
    wait_for(
        lambda: len(read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=1)) >= PATIENTS,
        120,
        "care teams validated",
    )
    i = 0
    for p in range(PATIENTS):
        feed.send(_obs(i, p), p)
        i += 1
    feed.flush()
    wait_for(
        lambda: all(
            len({m.key() for m in read_all(ns.kafka, ns.topic(f"research.{s}.v1"), settle=1)})
            >= PATIENTS
            for s in STUDY_IDS
        ),
        180,
        "every patient released to both studies",
        2,
    )

    # The stream: RATE resources/s over every patient, while half of them withdraw.
    stop = threading.Event()
    next_index = [i]

    def stream() -> None:
        tick = 0.05
        per_tick = max(1, round(RATE * tick))
        started = time.monotonic()
        n = 0
        while not stop.is_set():
            for _ in range(per_tick):
                k = next_index[0]
                feed.send(_obs(k, k % PATIENTS), k % PATIENTS)
                next_index[0] += 1
            n += 1
            time.sleep(max(0.0, started + n * tick - time.monotonic()))

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    time.sleep(2)
    withdrawn = list(range(0, PATIENTS, 2))[:WITHDRAWALS]
    effect_at: dict[int, float] = {}
    requested_at: dict[int, float] = {}
    effect_offsets: dict[int, dict[int, int]] = {}
    watermark_reader = Consumer(kafka_config.consumer_config(ns.kafka, f"wm-{uuid.uuid4().hex}"))
    stream_started = time.monotonic()
    gap = (30.0 if FULL else 6.0) / WITHDRAWALS  # withdrawals spread over 6 s (CI) or 30 s
    for p in withdrawn:
        requested_at[p] = time.time()
        r = api.post(f"/Consent/c-{p}/$withdraw", json={"patient": patient_ins(p)})
        assert r.status_code == 200, r.text
        effect_at[p] = time.time()
        effect_offsets[p] = _end_offsets(watermark_reader, feed.topic, ns.partitions)
        time.sleep(gap)
    time.sleep(3)  # keep streaming after the last withdrawal
    stop.set()
    streamer.join(30)
    stream_seconds = time.monotonic() - stream_started
    feed.flush()
    watermark_reader.close()
    sent = feed.sent

    # Drain: every record validated, every clinical record of a consenting patient released.
    outputs: dict[str, list[Message]] = {}

    def drained() -> bool:
        if worker.process.poll() is not None:  # nothing will drain: say why at once
            raise AssertionError(f"the worker stopped before the drain\n{still_missing()}")
        outputs["clinical"] = read_all(ns.kafka, ns.topic("clinical.fhir.v1"), settle=2)
        if len({header(m, envelope.H_ID) for m in outputs["clinical"]}) < sent:
            return False
        for s in STUDY_IDS:
            outputs[s] = read_all(ns.kafka, ns.topic(f"research.{s}.v1"), settle=2)
        outputs["outbox"] = read_all(ns.kafka, ns.topic("outbox.org-a.v1"), settle=2)
        return all(not _missing(outputs, s, set(withdrawn)) for s in STUDY_IDS) and all(
            len(_retracted(outputs[s])) >= WITHDRAWALS for s in STUDY_IDS
        )

    def still_missing() -> str:
        """Counts only (no payload): what the drain still waits for, and the worker's state."""
        clinical_ids = {header(m, envelope.H_ID) for m in outputs.get("clinical", [])}
        validated = {header(m, envelope.H_CORRELATION_ID) for m in outputs.get("clinical", [])}
        lines = [
            f"sent={sent} validated={len(validated)} clinical records={len(clinical_ids)}",
            f"not validated, by ingest partition: "
            f"{_by_partition(feed, set(feed.landed) - validated)}",
        ]
        gone = set(withdrawn)
        for s in STUDY_IDS:
            have = {header(m, envelope.H_ID) for m in outputs.get(s, [])}
            lacking = [
                m
                for m in outputs.get("clinical", [])
                if int((m.key() or b"0").decode()[-6:]) not in gone
                and child_message_id(header(m, envelope.H_ID) or "", s) not in have
            ]
            lines.append(
                f"{s}: records={len(have)} not released={len(lacking)} "
                f"(clinical partitions {sorted({m.partition() or 0 for m in lacking})}) "
                f"retracted={len(_retracted(outputs.get(s, [])))}/{WITHDRAWALS}"
            )
        code = worker.process.poll()
        lines.append(f"worker {'running' if code is None else f'exited {code}'}; log tail:")
        lines.append(worker.log()[-4000:])
        return "\n".join(lines)

    wait_for(drained, 600, "the pipeline drained", 5, explain=still_missing)
    clinical = _by_ce(outputs["clinical"])
    mids = {ce: header(m, envelope.H_CORRELATION_ID) or "" for ce, m in clinical.items()}

    def origin(clinical_ce: str) -> tuple[int, int, int]:
        """(patient, ingest partition, ingest offset) of a clinical record."""
        mid = mids[clinical_ce]
        return (feed.patient_of[mid], *feed.landed[mid])

    def after_effect(clinical_ce: str) -> bool:
        p, partition, offset = origin(clinical_ce)
        return p in effect_offsets and offset >= effect_offsets[p][partition]

    sent_after = defaultdict(int)
    for ce in clinical:
        if after_effect(ce):
            sent_after[origin(ce)[0]] += 1
    released_after: dict[str, int] = {}
    pseudonyms: dict[str, dict[int, bytes]] = {}
    retraction_latency: list[float] = []
    retraction_after_request: list[float] = []
    retracted_share: dict[str, str] = {}
    for s in STUDY_IDS:
        to_clinical = {child_message_id(ce, s): ce for ce in clinical}
        released = [m for m in outputs[s] if header(m, envelope.H_TYPE) != RETRACTION_TYPE]
        pseudonyms[s] = {
            origin(to_clinical[header(m, envelope.H_ID) or ""])[0]: m.key() for m in released
        }
        released_after[s] = sum(
            1 for m in released if after_effect(to_clinical[header(m, envelope.H_ID) or ""])
        )
        retractions = _retracted(outputs[s])
        done = [p for p in withdrawn if pseudonyms[s][p] in retractions]
        retracted_share[s] = f"{len(done)}/{len(withdrawn)}"
        retraction_latency += [retractions[pseudonyms[s][p]] - effect_at[p] for p in done]
        retraction_after_request += [retractions[pseudonyms[s][p]] - requested_at[p] for p in done]
    released_after["outbox"] = sum(
        1 for m in outputs["outbox"] if after_effect(header(m, envelope.H_ID) or "")
    )
    denies = _research_deny_times(ns)
    deny_latency = [
        denies[patient_ins(p)] - effect_at[p] for p in withdrawn if patient_ins(p) in denies
    ]
    print(
        f"\n[consent withdrawal under load] patients={PATIENTS} withdrawn={len(withdrawn)} "
        f"resources={sent} streamed at ~{(sent - 2 * PATIENTS) / stream_seconds:.0f}/s "
        f"sent-after-effect-point={sum(sent_after.values())} "
        f"released-after-effect-point={released_after} retractions={retracted_share} "
        f"effect latency: to retraction {_ms(retraction_latency)}, "
        f"to first deny {_ms(deny_latency)} ({len(deny_latency)} patients)"
    )
    assert min(sent_after[p] for p in withdrawn) >= 1, "a withdrawn patient sent nothing after"
    assert released_after == {"study-a": 0, "study-b": 0, "outbox": 0}
    assert retracted_share == dict.fromkeys(STUDY_IDS, f"{WITHDRAWALS}/{WITHDRAWALS}")
    assert all(not _missing(outputs, s, set(withdrawn)) for s in STUDY_IDS)
    # Never before the withdrawal was asked for. It may come before the client has read the
    # API's 200: the ledger record is acknowledged before the answer is sent, and the research
    # stage can retract within the answer's way back (a few ms, so the latency can be < 0).
    assert all(lat >= -0.005 for lat in retraction_after_request)

    # (6) Replay from offset 0 with a fresh application id, after stopping the first worker.
    worker.process.terminate()
    worker.process.wait(timeout=60)
    reader = Consumer(kafka_config.consumer_config(ns.kafka, f"wm-{uuid.uuid4().hex}"))
    replay_from = {
        name: _end_offsets(reader, ns.topic(name), ns.partitions)
        for name in ("research.study-a.v1", "research.study-b.v1", "outbox.org-a.v1")
    }
    reader.close()
    port = free_port()
    env = ns.env(CAREMESH_WORKER__WEB_PORT=str(port), CAREMESH_WORKER__DATA_DIR=str(tmp_path / "r"))
    env.update(WORKER_ENV)
    env["CAREMESH_WORKER__APP_ID"] = ns.prefix + "replay"
    replay = spawn("worker-replay", ["worker", "--stage", "share", "--stage", "research"], env)
    worker_ready(replay, port, timeout=180)
    kept = {ce for ce in clinical if origin(ce)[0] not in withdrawn}
    expected = {
        s: {(child_message_id(ce, s), pseudonyms[s][origin(ce)[0]]) for ce in kept}
        for s in STUDY_IDS
    }
    expected_outbox = {
        ce for ce in kept if header(clinical[ce], envelope.H_TYPE) == "org.hl7.fhir.Observation"
    }
    replayed: dict[str, list[Message]] = {}

    def replay_done() -> bool:
        for name, starts in replay_from.items():
            msgs = read_all(ns.kafka, ns.topic(name), settle=2)
            replayed[name] = [m for m in msgs if (m.offset() or 0) >= starts[m.partition() or 0]]
        return (
            all(
                {(header(m, envelope.H_ID), m.key()) for m in replayed[f"research.{s}.v1"]}
                >= expected[s]
                for s in STUDY_IDS
            )
            and {header(m, envelope.H_ID) for m in replayed["outbox.org-a.v1"]} >= expected_outbox
        )

    wait_for(replay_done, 600, "the replay complete", 5)
    time.sleep(3)
    replay_done()  # anything late (e.g. a record of a withdrawn patient) is read too
    first_values = {header(m, envelope.H_ID): m.value() for s in STUDY_IDS for m in outputs[s]}
    differences = {}
    for s in STUDY_IDS:
        got = {(header(m, envelope.H_ID), m.key()) for m in replayed[f"research.{s}.v1"]}
        differences[s] = {
            "missing": len(expected[s] - got),
            "unexpected": len(got - expected[s]),
            "value-differs": sum(
                1
                for m in replayed[f"research.{s}.v1"]
                if first_values.get(header(m, envelope.H_ID)) not in (None, m.value())
            ),
        }
    got_outbox = {header(m, envelope.H_ID) for m in replayed["outbox.org-a.v1"]}
    differences["outbox"] = {
        "missing": len(expected_outbox - got_outbox),
        "unexpected": len(got_outbox - expected_outbox),
    }
    print(
        f"[replay from offset 0, fresh app id] expected research records per study="
        f"{len(kept)} outbox={len(expected_outbox)} differences={differences}"
    )
    nothing = {"missing": 0, "unexpected": 0, "value-differs": 0}
    assert differences == {
        "study-a": nothing,
        "study-b": nothing,
        "outbox": {"missing": 0, "unexpected": 0},
    }


def _by_partition(feed: Feed, ids: set[str]) -> dict[int, int]:
    """Ingest partition → how many of `ids` landed there."""
    out: dict[int, int] = defaultdict(int)
    for mid in ids:
        out[feed.landed[mid][0]] += 1
    return dict(sorted(out.items()))


def _by_ce(msgs: list[Message]) -> dict[str, Message]:
    out: dict[str, Message] = {}
    for m in msgs:
        out.setdefault(header(m, envelope.H_ID) or "", m)
    return out


def _retracted(msgs: list[Message]) -> dict[bytes, float]:
    """Pseudonym → the time (epoch s) of its first retraction record."""
    out: dict[bytes, float] = {}
    for m in msgs:
        if header(m, envelope.H_TYPE) == RETRACTION_TYPE:
            at = m.timestamp()[1] / 1000
            out[m.key()] = min(at, out.get(m.key(), at))
    return out


def _missing(outputs: dict[str, list[Message]], study: str, withdrawn: set[int]) -> bool:
    """True while a clinical record of a consenting patient is not yet on the study topic."""
    clinical = outputs["clinical"]
    have = {header(m, envelope.H_ID) for m in outputs.get(study, [])}
    for m in clinical:
        patient = int((m.key() or b"0").decode()[-6:])
        if patient in withdrawn:
            continue
        if child_message_id(header(m, envelope.H_ID) or "", study) not in have:
            return True
    return False


def _research_deny_times(ns: Namespace) -> dict[str, float]:
    """INS → the earliest research-stage deny decision for that patient (from audit.v1)."""
    out: dict[str, float] = {}
    for m in read_all(ns.kafka, ns.topic("audit.v1"), settle=2):
        a = orjson.loads(m.value())
        observer = a.get("source", {}).get("observer", {}).get("display")
        if observer != "caremesh-research" or a.get("outcome") == "0":
            continue
        found = [
            e["what"]["identifier"]["value"]
            for e in a.get("entity", [])
            if e.get("what", {}).get("identifier")
        ]
        if not found:
            continue
        at = datetime.fromisoformat(a["recorded"]).timestamp()
        out[found[0]] = min(at, out.get(found[0], at))
    return out
