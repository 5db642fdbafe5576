"""Erasure in the consent core: the ledger record, the state fold and evaluation (rule `erased`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caremesh.consent import (
    ConsentPolicy,
    ConsentUpserted,
    ConsentWithdrawn,
    Outcome,
    PatientConsents,
    Rule,
    apply,
    evaluate,
    parse_event,
)
from caremesh.consent.model import ERASURE_ID, LedgerEvent, PatientErased
from caremesh.consent.parse import EVENT_INVALID, erasure_json
from caremesh.consent.state import from_dict, to_dict
from caremesh.errors import InvalidFhirError
from tests.unit.consent.consent_builders import provision, query, r4_consent
from tests.unit.consent.test_consent_properties import PURPOSES, fhir_consent, queries

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
PERMISSIVE = ConsentPolicy(
    defaults=dict.fromkeys(PURPOSES, Outcome.PERMIT), fallback=Outcome.PERMIT
)


def _permit_all(cid: str, recorded: str = "2024-01-01T09:00:00Z") -> dict[str, Any]:
    return r4_consent(cid, provision("permit"), recorded=recorded)


def test_erasure_record_parses_and_round_trips() -> None:
    event = parse_event({"caremeshEvent": "erasure", "at": "2025-03-01T08:00:00Z"})
    assert event == PatientErased(T0)
    assert parse_event(orjson.loads(orjson.dumps(erasure_json(event)))) == event


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"caremeshEvent": "erasure"}, id="no-time"),
        pytest.param({"caremeshEvent": "erasure", "at": "yesterday"}, id="bad-time"),
        pytest.param({"caremeshEvent": "erasure", "at": 20250301}, id="time-not-a-string"),
        pytest.param({"caremeshEvent": "erase", "at": "2025-03-01"}, id="unknown-kind"),
    ],
)
def test_bad_erasure_records_are_invalid_events(record: dict[str, Any]) -> None:
    with pytest.raises(InvalidFhirError) as caught:
        parse_event(record)
    assert caught.value.code == EVENT_INVALID
    assert "yesterday" not in str(caught.value)


def test_erasure_removes_consents_and_pending_withdrawals() -> None:
    state = apply(PatientConsents(), ConsentUpserted(_consent("a")))
    state = apply(state, ConsentWithdrawn("ghost", T0))
    assert state.consents
    assert state.pending
    assert not state.erased
    erased = apply(state, PatientErased(T1))
    assert erased.erased
    assert [c.id for c in erased.consents] == [ERASURE_ID]
    assert erased.pending == ()


@pytest.mark.parametrize("later", ["upsert", "withdrawal", "erasure"])
def test_an_erasure_is_final(later: str) -> None:
    state = apply(PatientConsents(), PatientErased(T0))
    event: LedgerEvent = {
        "upsert": ConsentUpserted(_consent("b", "2026-01-01T00:00:00Z")),
        "withdrawal": ConsentWithdrawn("b", T1),
        "erasure": PatientErased(T1),
    }[later]
    assert apply(state, event) == state


def test_erased_state_survives_the_table_form() -> None:
    state = apply(apply(PatientConsents(), ConsentUpserted(_consent("a"))), PatientErased(T0))
    back = from_dict(orjson.loads(orjson.dumps(to_dict(state))))
    assert back == state
    assert back.erased


@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_purpose_is_denied_with_rule_erased(purpose: str) -> None:
    state = apply(PatientConsents(), ConsentUpserted(_consent("a")))
    assert evaluate(state.consents, query(purpose), PERMISSIVE).permitted
    state = apply(state, PatientErased(T0))
    decision = evaluate(state.consents, query(purpose), PERMISSIVE)
    assert (decision.outcome, decision.rule, decision.purpose) == (
        Outcome.DENY,
        Rule.ERASED,
        purpose,
    )
    assert decision.consent_ids == ()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=4),
    st.lists(st.integers(0, 3), max_size=4),
    queries(),
    st.data(),
)
def test_after_an_erasure_nothing_is_ever_released(
    before: list[int], after: list[int], q: Any, data: st.DataObject
) -> None:
    """Whatever consents come before or after an erasure, every decision is deny `erased`."""
    state = PatientConsents()
    for i in before:
        state = apply(state, ConsentUpserted(_parsed(data.draw(fhir_consent(f"c{i}")))))
    state = apply(state, PatientErased(T0))
    for i in after:
        state = apply(state, ConsentUpserted(_parsed(data.draw(fhir_consent(f"c{i}")))))
    decision = evaluate(state.consents, q, PERMISSIVE)
    assert (decision.outcome, decision.rule) == (Outcome.DENY, Rule.ERASED)


def _parsed(body: dict[str, Any]) -> Any:
    event = parse_event(body)
    assert isinstance(event, ConsentUpserted)
    return event.consent


def _consent(cid: str, recorded: str = "2024-01-01T09:00:00Z") -> Any:
    return _parsed(_permit_all(cid, recorded))
