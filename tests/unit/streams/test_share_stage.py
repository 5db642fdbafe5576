"""The share stage's handler over plain records: a care-team member subscribed to a type gets the
patient's resources in their recipient form, the Patient first; a consent that refuses an
organisation keeps it out but audits the decision; a Patient is merged, not replaced (no broker).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from caremesh.consent.model import ActorRef
from caremesh.consent.policy import consent_policy
from caremesh.fhir.recipient_ids import SOURCE_SYSTEM_PREFIX, patient_recipient_id
from caremesh.kafka.io import Output
from caremesh.metrics import Metrics
from caremesh.settings import OrganisationSettings, Settings
from caremesh.streams import share as stage
from caremesh.tables.organisations import OrganisationRegistry
from caremesh.tables.state import PartitionState
from tests.unit.consent.consent_builders import provision, r4_consent
from tests.unit.streams.stage_support import FixedConsents, clinical

PATIENT = "2990175123456"
INS = "urn:oid:1.2.250.1.213.1.4.8"
NOW = datetime.now(UTC)


def _context(consents: list[dict[str, Any]] | None = None) -> stage.ShareContext:
    settings = Settings()
    orgs = [
        OrganisationSettings(id="org-a", name="Cabinet A", subscriptions=["Observation"]),
        OrganisationSettings(id="org-b", name="Cabinet B", subscriptions=["Observation"]),
    ]
    return stage.ShareContext(
        registry=OrganisationRegistry(orgs),
        teams=PartitionState(settings.kafka, "t.share-care-teams"),
        goldens=PartitionState(settings.kafka, "t.share-golden-patients"),
        recents=None,
        backfill_days=0,
        gate=FixedConsents(stage.STAGE, {PATIENT: consents or []}),
        policy=consent_policy(settings.consent),
        prefix="t.",
        metrics=Metrics(),
    )


def _patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "1",
        "identifier": [{"system": INS, "value": PATIENT}],
        **extra,
    }


def _care_team(*orgs: str) -> dict[str, Any]:
    return {
        "resourceType": "CareTeam",
        "id": "ct-1",
        "status": "active",
        "subject": {"reference": "Patient/1"},
        "participant": [{"member": {"reference": f"Organization/{o}"}} for o in orgs],
    }


def _observation(oid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": (NOW - timedelta(hours=1)).isoformat(),
        "valueQuantity": {"value": 91, "unit": "%"},
    }


def _feed(ctx: stage.ShareContext, resources: list[dict[str, Any]]) -> list[Output]:
    outputs: list[Output] = []
    for n, resource in enumerate(resources):
        outputs += stage.share_one(ctx, clinical(PATIENT, resource, at=NOW.timestamp(), offset=n))
    return outputs


def _outbox(outputs: list[Output], org: str) -> list[dict[str, Any]]:
    return [orjson.loads(o.value or b"") for o in outputs if o.topic == f"t.outbox.{org}.v1"]


def test_a_care_team_member_gets_the_patient_first_then_the_observation_in_recipient_form() -> None:
    ctx = _context()
    outputs = _feed(ctx, [_patient(gender="female"), _care_team("org-a"), _observation("1")])
    sent = _outbox(outputs, "org-a")
    assert [r["resourceType"] for r in sent] == ["Patient", "Observation"]
    patient, observation = sent
    assert patient["id"] == patient_recipient_id(PATIENT)
    assert observation["id"] != "1"  # never the source's own id
    assert observation["subject"]["reference"] == f"Patient/{patient['id']}"
    assert {"system": f"{SOURCE_SYSTEM_PREFIX}hosp-a", "value": "1"} in observation["identifier"]
    assert _outbox(outputs, "org-b") == []  # not on the care team


def test_a_consent_that_refuses_an_organisation_keeps_it_out_and_audits_the_refusal() -> None:
    refuse_a = r4_consent(
        "c-no-a",
        provision(
            "permit", sub=[provision("deny", actors=[ActorRef(reference="Organization/org-a")])]
        ),
    )
    ctx = _context([refuse_a])
    outputs = _feed(ctx, [_patient(), _care_team("org-a", "org-b"), _observation("1")])
    assert _outbox(outputs, "org-a") == []
    assert [r["resourceType"] for r in _outbox(outputs, "org-b")] == ["Patient", "Observation"]
    audits = [orjson.loads(a.value or b"") for a in ctx.gate.audits]  # type: ignore[attr-defined]
    assert any(a["outcome"] != "0" for a in audits)  # the refusal is audited too


def test_a_thinner_patient_description_erases_nothing_the_first_gave() -> None:
    ctx = _context()
    full = _patient(
        gender="female",
        address=[{"city": "Strasbourg", "postalCode": "67000"}],
        name=[{"family": "Synthé", "given": ["Anne"]}],
    )
    _feed(ctx, [full, _care_team("org-a")])
    thin = _feed(ctx, [_patient(gender="female")])
    (merged,) = _outbox(thin, "org-a")
    assert merged["address"][0]["city"] == "Strasbourg"
    assert merged["name"][0]["family"] == "Synthé"
