"""The organisations registry's fold: configured ones plus registrations; revocation wins."""

from __future__ import annotations

import orjson
import pytest

from caremesh.settings import OrganisationSettings
from caremesh.sharing import care_team as sharing
from caremesh.tables.organisations import OrganisationRegistry, Registration


def _record(reg: Registration) -> tuple[bytes, bytes]:
    return reg.id.encode(), reg.to_json()


def test_a_registration_adds_an_organisation_and_a_removal_drops_it() -> None:
    registry = OrganisationRegistry([OrganisationSettings(id="ctrl", subscriptions=["Condition"])])
    added = Registration("clinic-new", territory="north", subscriptions=("Observation",))
    assert registry.apply(*_record(added)) == "clinic-new"
    assert registry.known == {"ctrl", "clinic-new"}
    assert registry.subscriptions["clinic-new"] == {"Observation"}
    assert registry.apply(*_record(added)) is None  # the same registration again changes nothing
    removed = Registration("clinic-new", status="removed")
    assert registry.apply(*_record(removed)) == "clinic-new"
    assert registry.known == {"ctrl"}


def test_configured_organisations_win_but_a_removal_revokes_them_too() -> None:
    configured = OrganisationSettings(id="ctrl", fhir_endpoint="https://ctrl.test/fhir")
    registry = OrganisationRegistry([configured])
    assert registry.apply(*_record(Registration("ctrl", fhir_endpoint="https://x.test"))) is None
    assert registry.organisations["ctrl"] is configured
    assert registry.apply(*_record(Registration("ctrl", status="removed"))) == "ctrl"
    assert registry.known == frozenset()
    assert registry.apply(b"ctrl", None) == "ctrl"  # a tombstone forgets the registration
    assert registry.organisations["ctrl"] is configured


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        orjson.dumps({"id": "other", "status": "active"}),  # id differs from the key
        orjson.dumps({"id": "org-x", "status": "maybe"}),
        orjson.dumps({"id": "org-x", "status": "active", "subscriptions": "Observation"}),
        orjson.dumps({"id": "org-x", "status": "active", "fhir_endpoint": 3}),
    ],
)
def test_malformed_registrations_are_skipped(value: bytes) -> None:
    registry = OrganisationRegistry()
    assert registry.apply(b"org-x", value) is None
    assert registry.known == frozenset()


def test_a_care_team_names_an_organisation_before_it_is_a_member() -> None:
    team = {
        "resourceType": "CareTeam",
        "id": "ct1",
        "status": "active",
        "participant": [
            {"member": {"reference": "Organization/clinic-new"}},
            {"member": {"identifier": {"value": "unknown-identifier"}}},
        ],
    }
    state = sharing.fold_care_team({}, team, frozenset())
    assert state == {"CareTeam/ct1": ["clinic-new"]}
    # it receives only once it is a member subscribed to the type
    assert sharing.recipients(state, "Observation", {}) == []
    assert sharing.recipients(state, "Observation", {"clinic-new": frozenset({"Observation"})}) == [
        "clinic-new"
    ]


def test_a_registration_carries_the_release_the_organisation_takes() -> None:
    registry = OrganisationRegistry()
    registry.apply(*_record(Registration("clinic-r5", fhir_release="R5")))
    assert registry.organisations["clinic-r5"].fhir_release == "R5"
    older = {"id": "clinic-old", "status": "active", "subscriptions": []}  # written before it
    registry.apply(b"clinic-old", orjson.dumps(older))
    assert registry.organisations["clinic-old"].fhir_release == "R4"
    bad = {"id": "clinic-bad", "status": "active", "fhir_release": "R6"}
    assert Registration.parse(b"clinic-bad", orjson.dumps(bad)) is None


@pytest.mark.parametrize(("given", "expected"), [([], "R4"), (["--fhir-release", "R5"], "R5")])
def test_org_add_declares_the_fhir_release(
    monkeypatch: pytest.MonkeyPatch, given: list[str], expected: str
) -> None:
    from pathlib import Path

    from caremesh.cli import main as cli
    from caremesh.security import admission
    from caremesh.settings import Settings

    seen: dict[str, object] = {}

    def fake_org_add(settings: Settings, org_id: str, **kwargs: object) -> admission.Admission:
        seen.update(kwargs)
        return admission.Admission(org_id, f"org-{org_id}", Path("x"), "t", "kept", False, 0)

    monkeypatch.setattr(admission, "org_add", fake_org_add)
    args = cli.build_parser().parse_args(["org", "add", "clinic", "--territory", "t", *given])
    assert cli._org(args, Settings()) == 0
    assert seen["fhir_release"] == expected
