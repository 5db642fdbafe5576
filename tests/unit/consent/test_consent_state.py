"""The per-patient consent fold and its compact, JSON-able form."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from caremesh.consent import (
    ConsentUpserted,
    ConsentWithdrawn,
    PatientConsents,
    Withdrawal,
    apply,
    parse_consent,
)
from caremesh.consent.codec import consent_from_dict, consent_to_dict
from caremesh.consent.state import from_dict, to_dict
from caremesh.errors import RejectedInputError
from tests.unit.consent.consent_builders import (
    ORG_A,
    ORG_C_ID,
    provision,
    r4_consent,
    r5_consent,
)

T1 = datetime(2024, 6, 1, tzinfo=UTC)
T2 = datetime(2024, 9, 1, tzinfo=UTC)


def _up(data: dict[str, object]) -> ConsentUpserted:
    return ConsentUpserted(parse_consent(data))


def test_upsert_adds_and_replaces_by_id() -> None:
    state = apply(PatientConsents(), _up(r5_consent("b", "deny")))
    state = apply(state, _up(r5_consent("a", "permit")))
    assert [c.id for c in state.consents] == ["a", "b"]
    state = apply(state, _up(r5_consent("b", "permit", date="2024-02-01")))
    assert [c.id for c in state.consents] == ["a", "b"]
    replaced = state.get("b")
    assert replaced is not None
    assert replaced.root is not None
    assert replaced.root.outcome.value == "permit"


def test_fold_does_not_change_the_input_state() -> None:
    empty = PatientConsents()
    apply(empty, _up(r5_consent("a", "deny")))
    assert empty == PatientConsents()


def test_entered_in_error_removes_the_consent_and_its_withdrawals() -> None:
    state = apply(PatientConsents(), _up(r5_consent("a", "deny")))
    state = apply(state, ConsentWithdrawn("a", T1))
    state = apply(state, ConsentWithdrawn("ghost", T1))
    state = apply(state, _up(r5_consent("a", None, status="entered-in-error")))
    assert state.get("a") is None
    state = apply(state, _up(r5_consent("ghost", None, status="entered-in-error")))
    assert state == PatientConsents()


def test_withdrawal_attaches_to_its_consent() -> None:
    state = apply(PatientConsents(), _up(r5_consent("a", "permit")))
    state = apply(state, ConsentWithdrawn("a", T1, "HRESCH"))
    consent = state.get("a")
    assert consent is not None
    assert consent.withdrawals == (Withdrawal(T1, "HRESCH"),)


def test_withdrawal_before_its_consent_is_pending_then_attached() -> None:
    state = apply(PatientConsents(), ConsentWithdrawn("a", T1))
    assert state.consents == ()
    assert state.pending == (("a", Withdrawal(T1)),)
    state = apply(state, _up(r5_consent("a", "permit", date="2024-01-01")))
    consent = state.get("a")
    assert consent is not None
    assert consent.withdrawals == (Withdrawal(T1),)
    assert state.pending == ()


def test_new_version_recorded_after_a_withdrawal_is_a_reconsent() -> None:
    state = apply(PatientConsents(), _up(r5_consent("a", "permit", date="2024-01-01")))
    state = apply(state, ConsentWithdrawn("a", T1))
    state = apply(state, _up(r5_consent("a", "permit", date="2024-03-01")))
    kept = state.get("a")
    assert kept is not None
    assert kept.withdrawals == (Withdrawal(T1),)  # the correction predates the withdrawal
    state = apply(state, _up(r5_consent("a", "permit", date="2024-08-01")))
    renewed = state.get("a")
    assert renewed is not None
    assert renewed.withdrawals == ()


def _rich_state() -> PatientConsents:
    r4 = r4_consent(
        "r4",
        provision(
            "deny",
            purposes=["TREAT"],
            period=("2024-01-01", None),
            sub=[
                provision(
                    "deny",
                    actors=[ORG_A, ORG_C_ID],
                    labels=["R"],
                    actions=["access"],
                    types=["Observation"],
                    data_period=("2020", "2021"),
                    extra={"code": [{"text": "x"}]},
                )
            ],
        ),
    )
    state = apply(PatientConsents(), _up(r4))
    state = apply(state, _up(r5_consent("r5", "permit", period=("2024-01-01", "2026"))))
    state = apply(state, ConsentWithdrawn("r5", T2, "HRESCH"))
    state = apply(state, ConsentWithdrawn("later", T1))
    state = apply(state, _up(r5_consent("off", None, status="inactive", date=None)))
    return state


def test_state_round_trips_through_json() -> None:
    state = _rich_state()
    wire = orjson.dumps(to_dict(state))
    assert from_dict(orjson.loads(wire)) == state


def test_consent_codec_round_trips() -> None:
    for consent in _rich_state().consents:
        assert consent_from_dict(orjson.loads(orjson.dumps(consent_to_dict(consent)))) == consent


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"v": 99, "consents": []}, id="unknown-version"),
        pytest.param({"v": 1, "consents": [{"id": "a"}]}, id="consent-missing-fields"),
        pytest.param(
            {"v": 1, "consents": [], "pending": [["a", ["not-a-date", None]]]}, id="bad-date"
        ),
        pytest.param({"v": 1, "consents": "x"}, id="consents-not-a-list"),
    ],
)
def test_unreadable_state_is_rejected(value: dict[str, object]) -> None:
    with pytest.raises(RejectedInputError) as caught:
        from_dict(value)
    assert caught.value.code == "consent-state-invalid"


def test_the_codec_keeps_data_references_and_the_r4_exception_root() -> None:
    data = {"data": [{"meaning": "related", "reference": {"reference": "Task/t1"}}]}
    root = provision(actors=[ORG_A], extra=data)
    consent = parse_consent(r4_consent("with-data", root))
    assert consent.root is not None
    assert consent.root.provisions[0].data
    assert consent_from_dict(orjson.loads(orjson.dumps(consent_to_dict(consent)))) == consent
