"""Identity at recipients end to end: sources → validate → share → delivery → a recipient server
that enforces referential integrity, over the real broker, in both delivery modes.

org-a receives in mode `rest`, org-b in mode `transaction`; both subscribe to Observation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from caremesh import envelope, topics
from caremesh.envelope import Envelope
from caremesh.fhir.patient_key import INS_SYSTEM
from caremesh.settings import OrganisationSettings, Settings
from caremesh.tables.organisations import Registration
from tests.integration.consent.servers import serve
from tests.support.delivery import delivering, until
from tests.support.fhir_recipient import FhirRecipient, identifier_values
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve

pytestmark = pytest.mark.kafka

MODES = {"org-a": "rest", "org-b": "transaction"}
HL7 = Path(__file__).parents[2] / "data" / "hl7"


@pytest.fixture
def recipients() -> Iterator[dict[str, tuple[FhirRecipient, str]]]:
    with contextlib.ExitStack() as stack:
        out = {}
        for org in MODES:
            server = FhirRecipient()
            out[org] = (server, stack.enter_context(serve(server.app(), lifespan="off")) + "/fhir")
        yield out


def _orgs(recipients: dict[str, tuple[FhirRecipient, str]]) -> list[OrganisationSettings]:
    return [
        OrganisationSettings(
            id=org,
            name=f"Synthetic {org}",
            fhir_endpoint=recipients[org][1],
            subscriptions=["Observation"],
            delivery_mode=mode,  # type: ignore[arg-type]
        )
        for org, mode in MODES.items()
    ]


def _pipeline(
    namespace: Namespace,
    spawn: Callable[..., Proc],
    recipients: dict[str, tuple[FhirRecipient, str]],
    stages: tuple[str, ...] = ("validate", "share"),
) -> Settings:
    orgs = _orgs(recipients)
    port = free_port()
    args = ["worker"] + [a for s in stages for a in ("--stage", s)]
    env = namespace.env(
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_ORGANISATIONS=orjson.dumps([o.model_dump(mode="json") for o in orgs]).decode(),
    )
    worker_ready(spawn("worker", args, env), port)
    settings = Settings(organisations=orgs)
    settings = evolve(
        settings,
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        delivery__backoff_base_seconds=0.1,
    )
    return settings


def _h(source: str, msg_id: str, rtype: str = "Bundle") -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, f"urn:caremesh:source:{source}", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}


def _care_team(ct_id: str, local: str, orgs: tuple[str, ...]) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": ct_id,
        "status": "active",
        "subject": {"reference": f"Patient/{local}"},
        "participant": [{"member": {"reference": f"Organization/{o}"}} for o in orgs],
    }


def _observation(obs_id: str, local: str, marker: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"text": marker},
        "subject": {"reference": f"Patient/{local}"},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
    }


def _patient(local: str, ins: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": local,
        "identifier": [{"system": INS_SYSTEM, "value": ins}],
        **more,
    }


def _bundle(*resources: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(r) for r in resources]}
    )


def _subject_ins(server: FhirRecipient, observation: dict[str, Any]) -> list[str]:
    patient = server.resources[observation["subject"]["reference"]]
    return identifier_values(patient, INS_SYSTEM)


async def test_two_sources_whose_ids_all_collide_never_meet_at_a_recipient(
    namespace: Namespace,
    spawn: Callable[..., Proc],
    recipients: dict[str, tuple[FhirRecipient, str]],
) -> None:
    settings = _pipeline(namespace, spawn, recipients)
    expected: dict[str, str] = {}
    records = []
    for source, digit in (("hosp-a", "1"), ("hosp-b", "2")):
        for i in range(200):
            ins, marker = f"{digit}{i:012d}", f"{source}-{i}"
            expected[marker] = ins
            body = _bundle(
                _patient(str(i), ins, name=[{"family": f"Synth{digit}{i}"}]),
                _care_team(f"ct{i}", str(i), tuple(MODES)),
                _observation(f"o{i}", str(i), marker),
            )
            records.append((marker.encode(), body, _h(source, marker)))
    namespace.produce(topics.INGEST_FHIR, records)

    async with delivering(settings):
        for org, (server, _url) in recipients.items():
            done = await until(lambda s=server: len(s.of_type("Observation")) >= 400, 240)
            assert done, (org, len(server.of_type("Observation")), server.refused()[:3])
    for org, (server, _url) in recipients.items():
        patients = server.of_type("Patient")
        assert len(patients) == 400, org
        assert len({ins for p in patients for ins in identifier_values(p, INS_SYSTEM)}) == 400
        observations = server.of_type("Observation")
        assert len(observations) == 400, org
        for observation in observations:
            assert _subject_ins(server, observation) == [expected[observation["code"]["text"]]]
        assert server.refused() == [], org


async def test_one_person_from_fhir_and_hl7v2_is_one_patient_and_the_oru_erases_nothing(
    namespace: Namespace,
    spawn: Callable[..., Proc],
    recipients: dict[str, tuple[FhirRecipient, str]],
) -> None:
    ins = "100000000000017"  # the INS in PID-3 of tests/data/hl7
    settings = _pipeline(namespace, spawn, recipients, ("hl7v2", "validate", "share"))
    phone = {"system": "phone", "value": "+33 6 00 00 00 00", "use": "mobile"}
    namespace.produce(
        topics.INGEST_FHIR,
        [
            (
                b"fhir-1",
                _bundle(
                    _patient("1", ins, telecom=[phone]),
                    _care_team("ct1", "1", tuple(MODES)),
                    _observation("o1", "1", "from FHIR"),
                ),
                _h("hosp-fhir", "fhir-1"),
            )
        ],
    )
    async with delivering(settings):
        for server, _url in recipients.values():
            assert await until(lambda s=server: len(s.of_type("Observation")) >= 1, 120)
        hl7 = [(HL7 / "adt_a01.hl7").read_bytes(), (HL7 / "oru_r01.hl7").read_bytes()]
        for n, message in enumerate(hl7):
            env = Envelope(
                f"v2-{n}",
                "urn:caremesh:source:synth-hosp",
                "org.hl7.v2",
                content_type=envelope.HL7V2,
            )
            headers = [(k, v if isinstance(v, bytes) else b"") for k, v in env.headers()]
            namespace.produce(topics.INGEST_HL7V2, [(f"v2-{n}".encode(), message, headers)])
        for org, (server, _url) in recipients.items():
            done = await until(lambda s=server: len(s.of_type("Observation")) >= 5, 120)
            assert done, (org, server.refused()[:3])
            assert await until(lambda s=server: s.writes.count(_patient_key(s)) >= 3, 30), org

    for org, (server, _url) in recipients.items():
        patients = server.of_type("Patient")
        assert len(patients) == 1, org
        golden = patients[0]
        assert identifier_values(golden, INS_SYSTEM) == [ins]
        assert identifier_values(golden, "urn:caremesh:source:hosp-fhir") == ["1"]
        assert identifier_values(golden, "urn:caremesh:source:synth-hosp") == ["LOCAL7788"]
        assert golden["telecom"] == [phone]  # only the FHIR source said it
        assert golden["address"][0]["city"] == "Villesynth"  # only the ADT said it
        assert len(golden["name"]) == 2  # the ADT's legal and usual names, the ORU had one
        assert "Aline" in str(golden["name"])  # the ADT's second given name
        for observation in server.of_type("Observation"):
            assert _subject_ins(server, observation) == [ins]
        assert server.refused() == [], org


def _patient_key(server: FhirRecipient) -> str:
    patients = [k for k in server.resources if k.startswith("Patient/")]
    return patients[0] if patients else "-"


async def test_an_organisation_joining_the_care_team_first_receives_the_patient(
    namespace: Namespace,
    spawn: Callable[..., Proc],
    recipients: dict[str, tuple[FhirRecipient, str]],
) -> None:
    ins = "2990175123456"
    settings = _pipeline(namespace, spawn, recipients)
    first = _bundle(
        _patient("9", ins, name=[{"family": "Synthjoin"}]),
        _care_team("ct9", "9", ("org-a",)),
        _observation("o1", "9", "before"),
    )
    namespace.produce(topics.INGEST_FHIR, [(b"m1", first, _h("hosp-a", "m1"))])
    assert len(namespace.consume(topics.outbox_topic("org-a"), 2)) == 2
    later = _bundle(_care_team("ct9", "9", tuple(MODES)), _observation("o2", "9", "after"))
    namespace.produce(topics.INGEST_FHIR, [(b"m2", later, _h("hosp-a", "m2"))])

    outbox = [orjson.loads(m.value()) for m in namespace.consume(topics.outbox_topic("org-b"), 2)]
    assert [r["resourceType"] for r in outbox] == ["Patient", "Observation"]
    assert identifier_values(outbox[0], INS_SYSTEM) == [ins]
    assert outbox[1]["subject"]["identifier"] == {"system": INS_SYSTEM, "value": ins}
    async with delivering(settings):
        server = recipients["org-b"][0]
        assert await until(lambda: len(server.of_type("Observation")) == 1, 60), server.requests
        assert server.writes[0].startswith("Patient/")
        assert server.refused() == []
        observation = server.of_type("Observation")[0]
        assert observation["code"]["text"] == "after"
        assert _subject_ins(server, observation) == [ins]


def test_an_organisation_admitted_after_a_care_team_named_it_first_receives_the_patient(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    ins = "1840275999888"
    port = free_port()
    configured = [{"id": "org-a", "subscriptions": ["Observation"]}]
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate", "--stage", "share"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_ORGANISATIONS=orjson.dumps(configured).decode(),
        ),
    )
    worker_ready(worker, port)
    first = _bundle(
        _patient("5", ins), _care_team("ct5", "5", tuple(MODES)), _observation("o1", "5", "x")
    )
    namespace.produce(topics.INGEST_FHIR, [(b"m1", first, _h("hosp-a", "m1"))])
    assert len(namespace.consume(topics.outbox_topic("org-a"), 2)) == 2
    registration = Registration(id="org-b", territory="synth", subscriptions=("Observation",))
    namespace.produce(topics.ORGANISATIONS, [(b"org-b", registration.to_json(), [])])
    deadline = time.monotonic() + 60
    while "organisation=org-b active" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    later = _bundle(_observation("o2", "5", "after admission"))
    namespace.produce(topics.INGEST_FHIR, [(b"m2", later, _h("hosp-a", "m2"))])
    outbox = [orjson.loads(m.value()) for m in namespace.consume(topics.outbox_topic("org-b"), 2)]
    assert [r["resourceType"] for r in outbox] == ["Patient", "Observation"]
    assert identifier_values(outbox[0], INS_SYSTEM) == [ins]
    assert outbox[1]["subject"]["reference"] == f"Patient/{outbox[0]['id']}"


def test_a_joining_organisation_can_also_receive_the_last_n_days(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    ins = "2750313777666"
    port = free_port()
    orgs = [{"id": o, "subscriptions": ["Observation"]} for o in MODES]
    worker = spawn(
        "worker",
        ["worker", "--stage", "validate", "--stage", "share"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_ORGANISATIONS=orjson.dumps(orgs).decode(),
            CAREMESH_DELIVERY__BACKFILL_DAYS="30",
        ),
    )
    worker_ready(worker, port)
    recent_day = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    old = {**_observation("o-old", "3", "a year ago"), "effectiveDateTime": "2025-01-01"}
    fresh = {**_observation("o-new", "3", "two days ago"), "effectiveDateTime": recent_day}
    first = _bundle(_patient("3", ins), _care_team("ct3", "3", ("org-a",)), old, fresh)
    namespace.produce(topics.INGEST_FHIR, [(b"m1", first, _h("hosp-a", "m1"))])
    assert len(namespace.consume(topics.outbox_topic("org-a"), 3)) == 3
    later = _bundle(_care_team("ct3", "3", tuple(MODES)))
    namespace.produce(topics.INGEST_FHIR, [(b"m2", later, _h("hosp-a", "m2"))])
    got = namespace.consume_all(topics.outbox_topic("org-b"), settle=4)
    outbox = [orjson.loads(m.value()) for m in got]
    assert [r["resourceType"] for r in outbox] == ["Patient", "Observation"]
    assert outbox[1]["code"]["text"] == "two days ago"
    ce_ids = [envelope.headers_dict(m.headers())[envelope.H_ID] for m in got]
    assert len(set(ce_ids)) == 2
