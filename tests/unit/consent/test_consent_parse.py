"""Parsing FHIR Consent R4/R5 JSON into the model, and rejecting what cannot be enforced."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fhir.resources.consent import Consent as ConsentR5
from fhir.resources.R4B.consent import Consent as ConsentR4B

from caremesh.consent import (
    ActorRef,
    ConsentStatus,
    ConsentUpserted,
    ConsentWithdrawn,
    FhirRelease,
    Outcome,
    parse_consent,
    parse_event,
    withdrawal_json,
)
from caremesh.consent.parse import parse_datetime
from caremesh.errors import RejectedInputError
from tests.unit.consent.consent_builders import (
    ORG_A,
    ORG_C_ID,
    provision,
    r4_consent,
    r5_consent,
    withdrawal,
)

MARKER = "SECRET-VALUE-42"

R4_SAMPLE = r4_consent(
    "c-r4",
    provision(
        "deny",
        purposes=["TREAT"],
        period=("2024-01-01", "2026-12-31"),
        sub=[
            provision(
                actors=[ORG_A, ORG_C_ID],
                actions=["access"],
                labels=["N", "HIV"],
                types=["Observation"],
                data_period=("2020", None),
                sub=[provision(types=["MedicationRequest"])],
            )
        ],
    ),
)
R5_SAMPLE = r5_consent(
    "c-r5",
    "deny",
    [
        provision(
            actors=[ORG_A, ORG_C_ID],
            purposes=["TREAT"],
            actions=["access"],
            labels=["N", "HIV"],
            types=["Observation"],
            data_period=("2020", None),
            sub=[provision(types=["MedicationRequest"], r5=True)],
            r5=True,
        )
    ],
    period=("2024-01-01", "2026-12-31"),
)


def test_fixtures_are_valid_fhir() -> None:
    ConsentR4B.model_validate(R4_SAMPLE)
    ConsentR5.model_validate(R5_SAMPLE)


def test_r4_tree_is_normalised() -> None:
    consent = parse_consent(orjson.loads(orjson.dumps(R4_SAMPLE)))
    assert consent.release is FhirRelease.R4
    assert consent.status is ConsentStatus.ACTIVE
    assert consent.patient.identifier is not None
    assert consent.recorded == datetime(2024, 1, 1, 9, tzinfo=UTC)
    root = consent.root
    assert root is not None
    assert root.outcome is Outcome.DENY
    assert root.purposes == {"TREAT"}
    assert consent.period == root.period
    exception = root.provisions[0]
    assert exception.outcome is Outcome.PERMIT  # no type: the opposite of its parent
    assert [a.who for a in exception.actors] == [ORG_A, ORG_C_ID]
    assert exception.actors[0].role == "PRCP"
    assert exception.actions == {"access"}
    assert exception.security_labels == {"N", "HIV"}
    assert exception.classes == {"Observation"}
    assert exception.data_period is not None
    assert exception.data_period.start == datetime(2020, 1, 1, tzinfo=UTC)
    assert exception.provisions[0].outcome is Outcome.DENY
    assert exception.provisions[0].path == "Consent.provision.provision[0].provision[0]"


def test_r5_tree_has_the_same_shape_as_r4() -> None:
    r4 = parse_consent(R4_SAMPLE)
    r5 = parse_consent(R5_SAMPLE)
    assert r5.release is FhirRelease.R5
    assert r5.root is not None
    assert r4.root is not None
    assert r5.root.outcome is Outcome.DENY
    assert r5.root.path == "Consent.decision"
    assert r5.period == r4.period
    e4, e5 = r4.root.provisions[0], r5.root.provisions[0]
    assert (e5.outcome, e5.actors, e5.actions, e5.security_labels, e5.classes, e5.data_period) == (
        e4.outcome,
        e4.actors,
        e4.actions,
        e4.security_labels,
        e4.classes,
        e4.data_period,
    )
    assert e5.provisions[0].outcome is Outcome.DENY
    assert r5.patient == ActorRef(reference="Patient/p-1")


def test_explicit_r4_type_on_a_nested_provision_is_kept() -> None:
    consent = parse_consent(r4_consent("c", provision("permit", sub=[provision("permit")])))
    assert consent.root is not None
    assert consent.root.provisions[0].outcome is Outcome.PERMIT


def test_inactive_consent_without_rules_is_accepted() -> None:
    consent = parse_consent(r5_consent("c", None, status="inactive"))
    assert consent.root is None


def test_period_end_covers_its_precision() -> None:
    consent = parse_consent(r5_consent("c", "deny", period=("2024-03", "2024-12")))
    assert consent.period is not None
    assert consent.period.contains(datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert not consent.period.contains(datetime(2025, 1, 1, tzinfo=UTC))
    assert not consent.period.contains(datetime(2024, 2, 29, 23, 59, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        pytest.param(
            "2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), id="year"
        ),
        pytest.param(
            "2024-02",
            datetime(2024, 2, 1, tzinfo=UTC),
            datetime(2024, 3, 1, tzinfo=UTC),
            id="month",
        ),
        pytest.param(
            "2024-12-31",
            datetime(2024, 12, 31, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
            id="day",
        ),
        pytest.param(
            "2024-05-01T10:00:00+02:00",
            datetime(2024, 5, 1, 8, tzinfo=UTC),
            datetime(2024, 5, 1, 8, 0, 1, tzinfo=UTC),
            id="offset-second",
        ),
        pytest.param(
            "2024-05-01T10:00:00.5Z",
            datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC),
            datetime(2024, 5, 1, 10, 0, 0, 500001, tzinfo=UTC),
            id="fraction",
        ),
    ],
)
def test_fhir_dates(text: str, start: datetime, end: datetime) -> None:
    assert parse_datetime(text, "x") == (start, end)


def _without(data: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


def _with(data: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


BAD = [
    pytest.param(MARKER, "consent-invalid", id="not-an-object"),
    pytest.param(
        _with(R4_SAMPLE, MARKER, "resourceType"), "consent-invalid", id="wrong-resource-type"
    ),
    pytest.param(_without(R4_SAMPLE, "id"), "consent-invalid", id="missing-id"),
    pytest.param(_with(R4_SAMPLE, MARKER, "status"), "consent-invalid", id="unknown-status"),
    pytest.param(_with(R4_SAMPLE, "not-done", "status"), "consent-invalid", id="r5-status-in-r4"),
    pytest.param(_with(R5_SAMPLE, "proposed", "status"), "consent-invalid", id="r4-status-in-r5"),
    pytest.param(_without(R4_SAMPLE, "patient"), "consent-invalid", id="r4-missing-patient"),
    pytest.param(
        _with(R5_SAMPLE, {"reference": f"Group/{MARKER}"}, "subject"),
        "consent-unsupported",
        id="r5-subject-not-a-patient",
    ),
    pytest.param(
        _with(R4_SAMPLE, MARKER, "provision", "type"), "consent-invalid", id="bad-provision-type"
    ),
    pytest.param(
        _without(_without(R4_SAMPLE, "provision", "type"), "policyRule"),
        "consent-unsupported",
        id="active-r4-without-type-nor-policy-rule",
    ),
    pytest.param(
        _without(R5_SAMPLE, "decision"), "consent-unsupported", id="active-r5-without-decision"
    ),
    pytest.param(_with(R5_SAMPLE, MARKER, "decision"), "consent-invalid", id="bad-decision"),
    pytest.param(
        _with(R4_SAMPLE, [{"system": "urn:example:pou", "code": MARKER}], "provision", "purpose"),
        "consent-unsupported",
        id="foreign-purpose-system",
    ),
    pytest.param(_with(R4_SAMPLE, MARKER, "dateTime"), "consent-invalid", id="bad-date"),
    pytest.param(
        _with(R4_SAMPLE, "2024-13-01", "dateTime"), "consent-invalid", id="month-out-of-range"
    ),
    pytest.param(
        _with(R5_SAMPLE, {"start": "2025-01-01", "end": "2024-01-01"}, "period"),
        "consent-invalid",
        id="period-end-before-start",
    ),
    pytest.param(_with(R4_SAMPLE, "permit", "decision"), "consent-invalid", id="ambiguous-release"),
    pytest.param(
        _with(R4_SAMPLE, MARKER, "provision", "actor"), "consent-invalid", id="actor-not-array"
    ),
    pytest.param(
        _with(R4_SAMPLE, [{"role": {"text": MARKER}}], "provision", "actor"),
        "consent-unsupported",
        id="actor-without-reference",
    ),
    pytest.param(
        _with(R4_SAMPLE, {"display": MARKER}, "patient"),
        "consent-invalid",
        id="patient-display-only",
    ),
]


@pytest.mark.parametrize(("data", "code"), BAD)
def test_bad_consents_are_rejected_without_values(data: Any, code: str) -> None:
    with pytest.raises(RejectedInputError) as caught:
        parse_consent(data)
    assert caught.value.code == code
    assert MARKER not in str(caught.value)
    assert "Consent" in caught.value.detail  # a coordinate, so an operator can find the element


def test_explicit_release_overrides_detection() -> None:
    with pytest.raises(RejectedInputError):
        parse_consent(R4_SAMPLE, FhirRelease.R5)


def test_absolute_and_versioned_references_are_normalised() -> None:
    data = r4_consent(
        "c",
        provision(
            "deny",
            sub=[
                provision(
                    actors=[ActorRef("https://h.example.test/fhir/Organization/o1/_history/3")]
                )
            ],
        ),
    )
    consent = parse_consent(data)
    assert consent.root is not None
    assert consent.root.provisions[0].actors[0].who.reference == "Organization/o1"


def test_events_are_upserts_or_withdrawals() -> None:
    assert isinstance(parse_event(R5_SAMPLE), ConsentUpserted)
    event = parse_event(withdrawal("c-r5", "2025-01-01T00:00:00Z", "HRESCH"))
    assert event == ConsentWithdrawn("c-r5", datetime(2025, 1, 1, tzinfo=UTC), "HRESCH")
    assert parse_event(orjson.loads(orjson.dumps(withdrawal_json(event)))) == event


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"resourceType": "Patient", "id": MARKER}, id="other-resource"),
        pytest.param(
            {"caremeshEvent": "consent-withdrawal", "at": "2025-01-01"}, id="no-consent-id"
        ),
        pytest.param(withdrawal("c", MARKER), id="bad-time"),
        pytest.param(withdrawal("c", "2025-01-01", MARKER), id="unknown-purpose"),
        pytest.param([MARKER], id="not-an-object"),
    ],
)
def test_bad_events_are_rejected_without_values(record: Any) -> None:
    with pytest.raises(RejectedInputError) as caught:
        parse_event(record)
    assert caught.value.code == "consent-event-invalid"
    assert MARKER not in str(caught.value)


@pytest.mark.parametrize(
    ("date", "last_updated", "expected"),
    [
        pytest.param(
            "2025-03-01", "2025-03-01T10:30:00Z", "2025-03-01T10:30:00+00:00", id="refined"
        ),
        pytest.param(
            "2025-03-01", "2025-04-02T10:30:00Z", "2025-03-01T00:00:00+00:00", id="outside-date"
        ),
        pytest.param(None, "2025-04-02T10:30:00Z", "2025-04-02T10:30:00+00:00", id="no-date"),
        pytest.param("2025-03-01", None, "2025-03-01T00:00:00+00:00", id="no-meta"),
        pytest.param(None, None, None, id="neither"),
    ],
)
def test_recorded_is_refined_by_meta_last_updated(
    date: str | None, last_updated: str | None, expected: str | None
) -> None:
    data = r5_consent("c", "permit", date=date)
    if last_updated is not None:
        data["meta"] = {"lastUpdated": last_updated}
    recorded = parse_consent(data).recorded
    assert (recorded.isoformat() if recorded else None) == expected
