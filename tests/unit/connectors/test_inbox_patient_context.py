"""The inbox's patient table and the consent decision that lets an alert card show it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from caremesh.connectors.inbox.context import card_context, treat_decision
from caremesh.connectors.inbox.patients import PatientContext, PatientTable
from caremesh.consent.model import ActorRef
from caremesh.consent.parse import parse_consent
from caremesh.consent.policy import consent_policy
from caremesh.settings import ConsentSettings
from tests.unit.consent.consent_builders import provision, r4_consent

KEY = "2850675123456"
NOW = datetime(2026, 3, 5, 9, 30, tzinfo=UTC)

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [
        {"use": "usual", "given": ["Jo"]},
        {"use": "official", "family": "Muller", "given": ["Jeanne", "Marie"]},
    ],
    "gender": "female",
    "birthDate": "1948-03-06",
    "telecom": [
        {"system": "email", "value": "x@example.org"},
        {"system": "phone", "value": "+33 3 88 00 00 00"},
    ],
}
CARE_TEAM = {
    "resourceType": "CareTeam",
    "id": "ct1",
    "participant": [
        {"member": {"reference": "Organization/org-a"}},
        {
            "member": {"reference": "Practitioner/pr1"},
            "onBehalfOf": {"reference": "Organization/org-b"},
        },
    ],
    "managingOrganization": [{"reference": "Organization/org-a"}],
}


def test_the_table_folds_name_sex_age_phone_and_care_team() -> None:
    table = PatientTable()
    table.fold(KEY, {"resourceType": "Observation", "id": "o1"})
    assert table.get(KEY) is None
    table.fold(KEY, PATIENT)
    table.fold(KEY, CARE_TEAM)
    table.fold(
        KEY,
        {
            **CARE_TEAM,
            "id": "ct2",
            "participant": [{"member": {"reference": "Organization/org-c"}}],
        },
    )
    found = table.get(KEY)
    assert found is not None
    assert found.to_json(NOW.date()) == {
        "name": "Jeanne Marie Muller",
        "sex": "female",
        "age": 77,
        "phone": "+33 3 88 00 00 00",
        "care_team": ["org-a", "org-b", "org-c"],
    }
    # A later Patient replaces what it carries and keeps the rest;
    # an updated CareTeam replaces its own members (ct2 still names org-a as manager).
    table.fold(KEY, {"resourceType": "Patient", "telecom": [{"system": "phone", "value": "06 00"}]})
    table.fold(KEY, {**CARE_TEAM, "participant": [], "managingOrganization": []})
    later = table.get(KEY)
    assert later is not None
    assert (later.name, later.phone, later.organisations()) == (
        "Jeanne Marie Muller",
        "06 00",
        ["org-a", "org-c"],
    )


@pytest.mark.parametrize(
    ("birth", "today", "age"),
    [
        ("1948-03-06", date(2026, 3, 5), 77),
        ("1948-03-06", date(2026, 3, 6), 78),
        ("1948", date(2026, 3, 6), None),
        ("1948-02-30", date(2026, 3, 6), None),
        ("", date(2026, 3, 6), None),
    ],
)
def test_age_is_in_whole_years_from_a_full_birth_date(
    birth: str, today: date, age: int | None
) -> None:
    assert PatientContext(birth_date=birth).age(today) == age


def _deny_treat_for(org: str) -> object:
    body = r4_consent(
        "consent-1",
        provision(
            "permit",
            sub=[
                provision(
                    "deny", actors=[ActorRef(reference=f"Organization/{org}")], purposes=["TREAT"]
                )
            ],
        ),
    )
    body["patient"] = {"identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": KEY}}
    return parse_consent(body)


def test_the_card_shows_the_context_only_where_consent_permits_treat() -> None:
    policy = consent_policy(ConsentSettings())
    patient = PatientTable()
    patient.fold(KEY, PATIENT)
    context = patient.get(KEY)
    consents = (_deny_treat_for("org-a"),)

    permitted = treat_decision(consents, KEY, "org-b", policy, NOW)
    assert card_context(permitted, context, NOW)["name"] == "Jeanne Marie Muller"
    denied = treat_decision(consents, KEY, "org-a", policy, NOW)
    assert card_context(denied, context, NOW) == {"withheld": "consent"}
    no_consent = treat_decision((), KEY, "org-a", policy, NOW)
    assert card_context(no_consent, None, NOW) == {"withheld": "unknown"}
