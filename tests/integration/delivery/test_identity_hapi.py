"""Identity at a real FHIR server: sources → hl7v2/validate/share → delivery → HAPI FHIR R4.

The same promises as test_recipient_identity, judged by a server nobody here wrote (local/hapi:
HAPI FHIR's RestfulServer with referential integrity and its validator on every request), in
both delivery modes (`rest`: an update per resource; `transaction`: a Bundle per batch with
conditional updates by identifier). The HAPI server of the test process is shared, so each test
run has its own sources and INS values and looks at the server only through them.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from caremesh import envelope, topics
from caremesh.envelope import Envelope
from caremesh.fhir.patient_key import INS_SYSTEM
from caremesh.settings import OrganisationSettings, Settings
from tests.support.delivery import delivering, until
from tests.support.fhir_recipient import identifier_values
from tests.support.hapi import Hapi
from tests.support.kafka import Namespace, Proc, free_port, worker_ready
from tests.support.settings import evolve

pytestmark = pytest.mark.kafka

ORG = "org-a"
HL7 = Path(__file__).parents[2] / "data" / "hl7"
HL7_INS = b"100000000000017"  # the INS in PID-3 of tests/data/hl7
MODES = ("rest", "transaction")
PATIENTS = int(os.environ.get("CAREMESH_TEST_IDENTITY_PATIENTS", "200"))
"""Patients per source (the acceptance figure is 200)."""


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _ins_stem() -> str:
    """Eight random digits: INS values of one test run never meet another run's."""
    return f"{random.randrange(10**8):08d}"


def _pipeline(
    namespace: Namespace,
    spawn: Callable[..., Proc],
    hapi: Hapi,
    mode: str,
    subscriptions: list[str],
    stages: tuple[str, ...] = ("validate", "share"),
) -> Settings:
    org = OrganisationSettings(
        id=ORG,
        name="Synthetic provider on HAPI",
        fhir_endpoint=hapi.base_url,
        subscriptions=subscriptions,
        delivery_mode=mode,
    )
    port = free_port()
    args = ["worker"] + [a for s in stages for a in ("--stage", s)]
    env = namespace.env(
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_ORGANISATIONS=orjson.dumps([org.model_dump(mode="json")]).decode(),
    )
    worker_ready(spawn("worker", args, env), port)
    return evolve(
        Settings(organisations=[org]),
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        delivery__backoff_base_seconds=0.1,
    )


async def until_hapi(predicate: Callable[[], object], timeout: float) -> bool:
    """Wait on a predicate that asks the HAPI server (in a thread, every half second)."""
    return await until(predicate, timeout, every=0.5, blocking=True)


def _headers(source: str, msg_id: str, rtype: str = "Bundle") -> list[tuple[str, bytes]]:
    env = Envelope(msg_id, f"urn:caremesh:source:{source}", envelope.fhir_event_type(rtype))
    return [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in env.headers()]


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}


def _bundle(*resources: dict[str, Any]) -> bytes:
    entries = [_entry(r) for r in resources]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _patient(local: str, ins: str, **more: Any) -> dict[str, Any]:
    identifier = [{"system": INS_SYSTEM, "value": ins}]
    return {"resourceType": "Patient", "id": local, "identifier": identifier, **more}


def _care_team(ct_id: str, patient_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": ct_id,
        "status": "active",
        "subject": {"reference": patient_ref},
        "participant": [{"member": {"reference": f"Organization/{ORG}"}}],
    }


def _observation(obs_id: str, patient_ref: str, marker: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"text": marker},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": "2026-01-02T10:00:00+01:00",
    }


def _one_patient(hapi: Hapi, ins: str) -> dict[str, Any]:
    found = hapi.by_identifier("Patient", INS_SYSTEM, ins)
    assert len(found) == 1, (ins, len(found))
    return found[0]


def _failed(namespace: Namespace) -> list[Any]:
    return namespace.consume_all(topics.DELIVERY_FAILED, settle=2)


@pytest.mark.parametrize("mode", MODES)
async def test_two_sources_whose_ids_all_collide_are_400_patients_at_hapi(
    namespace: Namespace, spawn: Callable[..., Proc], hapi_r4: Hapi, mode: str
) -> None:
    settings = _pipeline(namespace, spawn, hapi_r4, mode, ["Observation"])
    run, stem = _run_id(), _ins_stem()
    expected: dict[str, str] = {}  # INS → the marker of that person's Observation
    records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    sources = (f"hosp-a-{run}", f"hosp-b-{run}")
    for source, digit in zip(sources, "12", strict=True):
        for i in range(PATIENTS):
            ins, marker = f"{digit}{stem}{i:04d}", f"{source}-{i}"
            expected[ins] = marker
            body = _bundle(
                _patient(str(i), ins, name=[{"family": f"Synth{digit}x{i}"}]),
                _care_team(f"ct{i}", f"Patient/{i}"),
                _observation(f"o{i}", f"Patient/{i}", marker),
            )
            records.append((marker.encode(), body, _headers(source, marker)))
    namespace.produce(topics.INGEST_FHIR, records)

    def arrived() -> int:
        # one scan per source: the server holds one lock, and polling must not slow delivery
        return sum(
            len(hapi_r4.search("Observation", identifier=f"urn:caremesh:source:{source}|"))
            for source in sources
        )

    async with delivering(settings):
        done = await until_hapi(lambda: arrived() >= 2 * PATIENTS, 240)
        assert done, (mode, arrived(), [m.value()[-300:] for m in _failed(namespace)][:3])

    patient_ids = set()
    for ins, marker in expected.items():
        patient = _one_patient(hapi_r4, ins)
        patient_ids.add(patient["id"])
        observations = hapi_r4.search("Observation", subject=f"Patient/{patient['id']}")
        assert [o["code"]["text"] for o in observations] == [marker], (mode, ins)
    assert len(patient_ids) == 2 * PATIENTS, mode
    assert _failed(namespace) == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_generator_bundle_with_urn_uuid_references_resolves_at_hapi(
    namespace: Namespace, spawn: Callable[..., Proc], hapi_r4: Hapi, mode: str
) -> None:
    subscriptions = ["Encounter", "Observation", "Condition"]
    settings = _pipeline(namespace, spawn, hapi_r4, mode, subscriptions)
    ins = f"1{_ins_stem()}0001"
    patient_url, encounter_url = _urn(), _urn()
    resources: list[tuple[str, dict[str, Any]]] = [
        (
            patient_url,
            {
                "resourceType": "Patient",
                "identifier": [{"system": INS_SYSTEM, "value": ins}],
                "name": [{"family": "Synthgen"}],
            },
        ),
        (_urn(), {k: v for k, v in _care_team("x", patient_url).items() if k != "id"}),
        (
            encounter_url,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": patient_url},
            },
        ),
    ]
    for n in range(3):
        observation = _observation("x", patient_url, f"generated-{n}")
        del observation["id"]
        observation["encounter"] = {"reference": encounter_url}
        resources.append((_urn(), observation))
    resources.append(
        (
            _urn(),
            {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "synthetic condition"},
                "subject": {"reference": patient_url},
                "encounter": {"reference": encounter_url},
            },
        )
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "POST", "url": resource["resourceType"]},
            }
            for full_url, resource in resources
        ],
    }
    source = f"generator-{_run_id()}"
    namespace.produce(
        topics.INGEST_FHIR, [(b"gen-1", orjson.dumps(bundle), _headers(source, "gen-1"))]
    )

    def delivered() -> list[dict[str, Any]]:
        return hapi_r4.search(
            "Observation", **{"subject.identifier": f"{INS_SYSTEM}|{ins}"}
        ) + hapi_r4.search("Condition", **{"subject.identifier": f"{INS_SYSTEM}|{ins}"})

    async with delivering(settings):
        assert await until_hapi(lambda: len(delivered()) == 4, 120), mode

    patient = _one_patient(hapi_r4, ins)
    for resource in delivered():
        assert resource["subject"]["reference"] == f"Patient/{patient['id']}"
        encounter_ref = resource["encounter"]["reference"]
        assert not encounter_ref.startswith("urn:"), encounter_ref
        rtype, rid = encounter_ref.split("/")
        encounter = hapi_r4.read(rtype, rid)
        assert encounter is not None, encounter_ref
        assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert _failed(namespace) == []


@pytest.mark.parametrize("mode", MODES)
async def test_one_person_over_fhir_and_hl7v2_is_one_patient_at_hapi_and_the_oru_erases_nothing(
    namespace: Namespace, spawn: Callable[..., Proc], hapi_r4: Hapi, mode: str
) -> None:
    settings = _pipeline(
        namespace, spawn, hapi_r4, mode, ["Observation"], ("hl7v2", "validate", "share")
    )
    run = _run_id()
    ins = f"2{_ins_stem()}000017"
    fhir_source, v2_source = f"hosp-fhir-{run}", f"synth-hosp-{run}"
    phone = {"system": "phone", "value": "+33 6 00 00 00 00", "use": "mobile"}
    first = _bundle(
        _patient("1", ins, telecom=[phone]),
        _care_team("ct1", "Patient/1"),
        _observation("o1", "Patient/1", "from FHIR"),
    )
    namespace.produce(topics.INGEST_FHIR, [(b"fhir-1", first, _headers(fhir_source, "fhir-1"))])

    def observations() -> list[dict[str, Any]]:
        return hapi_r4.search("Observation", **{"subject.identifier": f"{INS_SYSTEM}|{ins}"})

    async with delivering(settings):
        assert await until_hapi(lambda: len(observations()) == 1, 120), mode
        for n, name in enumerate(("adt_a01.hl7", "oru_r01.hl7")):
            message = (HL7 / name).read_bytes().replace(HL7_INS, ins.encode())
            env = Envelope(
                f"v2-{n}",
                f"urn:caremesh:source:{v2_source}",
                "org.hl7.v2",
                content_type=envelope.HL7V2,
            )
            headers = [(k, v if isinstance(v, bytes) else b"") for k, v in env.headers()]
            namespace.produce(topics.INGEST_HL7V2, [(f"v2-{n}".encode(), message, headers)])
        arrived = await until_hapi(lambda: len(observations()) >= 5, 200)
        assert arrived, (mode, len(observations()), [m.value()[-300:] for m in _failed(namespace)])
        # the ORU's Patient is the last write of the Patient: wait until its source id is there
        assert await until_hapi(
            lambda: (
                "LOCAL7788"
                in identifier_values(_one_patient(hapi_r4, ins), f"urn:caremesh:source:{v2_source}")
            ),
            60,
        )
        await asyncio.sleep(3)  # let any later Patient write land before judging the union

    golden = _one_patient(hapi_r4, ins)
    assert identifier_values(golden, f"urn:caremesh:source:{fhir_source}") == ["1"]
    assert identifier_values(golden, f"urn:caremesh:source:{v2_source}") == ["LOCAL7788"]
    assert golden["telecom"] == [phone]  # only the FHIR source said it
    assert golden["address"][0]["city"] == "Villesynth"  # only the ADT said it
    assert len(golden["name"]) == 2  # the ADT's legal and usual names; the ORU had one
    assert "Aline" in str(golden["name"])  # the ADT's second given name
    for observation in observations():
        assert observation["subject"]["reference"] == f"Patient/{golden['id']}"
    assert _failed(namespace) == []


@pytest.mark.parametrize("mode", MODES)
async def test_an_organisation_joining_the_care_team_gets_the_patient_first_at_hapi(
    namespace: Namespace, spawn: Callable[..., Proc], hapi_r4: Hapi, mode: str
) -> None:
    """The Patient went out before org-a was on the care team; HAPI refuses any reference to a
    Patient it does not hold, so the later Observation lands only if the Patient came first."""
    org = OrganisationSettings(
        id=ORG,
        fhir_endpoint=hapi_r4.base_url,
        subscriptions=["Observation"],
        delivery_mode=mode,
    )
    other = OrganisationSettings(id="org-b", subscriptions=["Observation"])
    port = free_port()
    env = namespace.env(
        CAREMESH_WORKER__WEB_PORT=str(port),
        CAREMESH_ORGANISATIONS=orjson.dumps(
            [o.model_dump(mode="json") for o in (org, other)]
        ).decode(),
    )
    worker_ready(spawn("worker", ["worker", "--stage", "validate", "--stage", "share"], env), port)
    settings = evolve(
        Settings(organisations=[org]),
        kafka__bootstrap_servers=namespace.kafka,
        kafka__topic_prefix=namespace.prefix,
        delivery__backoff_base_seconds=0.1,
    )
    ins, source = f"2{_ins_stem()}0009", f"hosp-a-{_run_id()}"
    team = {
        **_care_team("ct9", "Patient/9"),
        "participant": [{"member": {"reference": "Organization/org-b"}}],
    }
    first = _bundle(
        _patient("9", ins, name=[{"family": "Synthjoin"}]),
        team,
        _observation("o1", "Patient/9", "before"),
    )
    namespace.produce(topics.INGEST_FHIR, [(b"m1", first, _headers(source, "m1"))])
    assert len(namespace.consume(topics.outbox_topic("org-b"), 2)) == 2
    joined = {**team, "participant": [*team["participant"], *_care_team("x", "")["participant"]]}
    later = _bundle(joined, _observation("o2", "Patient/9", "after"))
    namespace.produce(topics.INGEST_FHIR, [(b"m2", later, _headers(source, "m2"))])

    def observations() -> list[dict[str, Any]]:
        return hapi_r4.search("Observation", **{"subject.identifier": f"{INS_SYSTEM}|{ins}"})

    async with delivering(settings):
        assert await until_hapi(lambda: len(observations()) == 1, 120), (
            mode,
            [m.value()[-300:] for m in _failed(namespace)],
        )
    patient = _one_patient(hapi_r4, ins)
    [observation] = observations()
    assert observation["code"]["text"] == "after"
    assert observation["subject"]["reference"] == f"Patient/{patient['id']}"
    assert _failed(namespace) == []
