"""Properties of evaluation over generated R4/R5 consents and queries (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from caremesh.consent import (
    ActorRef,
    Consent,
    ConsentPolicy,
    DecisionQuery,
    Outcome,
    Rule,
    Withdrawal,
    evaluate,
    parse_consent,
)
from caremesh.consent.codec import consent_from_dict, consent_to_dict
from caremesh.consent.purpose import implies, lineage
from tests.unit.consent.consent_builders import (
    DR_X,
    ORG_A,
    ORG_B,
    ORG_C_ID,
    ORG_D_ID,
    PATIENT,
    provision,
    r4_consent,
    r5_consent,
)

PURPOSES = ["TREAT", "ETREAT", "BTG", "HRESCH", "CLINTRCH", "BIORCH", "HOPERAT", "PUBHLTH"]
ACTORS = [ORG_A, ORG_B, ORG_C_ID, ORG_D_ID, DR_X]
LABELS = ["N", "R", "V", "HIV", "PSY", "ETH"]
TYPES = ["Observation", "Condition", "MedicationRequest"]
ACTIONS = ["access", "disclose", "use", "collect"]

days = st.dates(min_value=date(2019, 1, 1), max_value=date(2025, 12, 31))


@st.composite
def periods(draw: st.DrawFn) -> tuple[str | None, str | None]:
    a, b = sorted([draw(days), draw(days)])
    return (
        draw(st.sampled_from([a.isoformat(), None])),
        draw(st.sampled_from([b.isoformat(), None])),
    )


@st.composite
def provisions(draw: st.DrawFn, *, r5: bool, depth: int, root: bool = False) -> dict[str, Any]:
    type_choices = ["permit", "deny"] if root else [None, "permit", "deny"]
    sub = draw(st.lists(provisions(r5=r5, depth=depth - 1), max_size=2)) if depth > 0 else []
    return provision(
        None if r5 else draw(st.sampled_from(type_choices)),
        actors=draw(st.lists(st.sampled_from(ACTORS), max_size=2, unique=True)),
        purposes=draw(st.lists(st.sampled_from(PURPOSES), max_size=2, unique=True)),
        labels=draw(st.lists(st.sampled_from(LABELS), max_size=2, unique=True)),
        types=draw(st.lists(st.sampled_from(TYPES), max_size=1)),
        actions=draw(st.lists(st.sampled_from(ACTIONS), max_size=1)),
        period=draw(st.none() | periods()),
        data_period=draw(st.none() | periods()),
        sub=sub,
        r5=r5,
    )


@st.composite
def fhir_consent(draw: st.DrawFn, cid: str) -> dict[str, Any]:
    status = draw(st.sampled_from(["active", "active", "active", "inactive", "draft"]))
    recorded = draw(days).isoformat()
    if draw(st.booleans()):
        return r5_consent(
            cid,
            draw(st.sampled_from(["permit", "deny"])),
            draw(st.lists(provisions(r5=True, depth=1), max_size=2)),
            status=status,
            date=recorded,
            period=draw(st.none() | periods()),
        )
    root = draw(provisions(r5=False, depth=2, root=True))
    return r4_consent(cid, root, status=status, recorded=recorded)


@st.composite
def consent_lists(draw: st.DrawFn) -> list[Consent]:
    count = draw(st.integers(min_value=0, max_value=3))
    return [parse_consent(draw(fhir_consent(f"c{i}"))) for i in range(count)]


@st.composite
def queries(draw: st.DrawFn) -> DecisionQuery:
    moment = st.builds(
        lambda d, h: datetime.combine(d, time(h), tzinfo=UTC), days, st.integers(0, 23)
    )
    return DecisionQuery(
        patient=PATIENT,
        purpose=draw(st.sampled_from(PURPOSES)),
        now=draw(moment),
        actor=draw(st.none() | st.sampled_from(ACTORS)),
        resource_type=draw(st.none() | st.sampled_from(TYPES)),
        security_labels=frozenset(draw(st.lists(st.sampled_from(LABELS), max_size=2))),
        data_date=draw(st.none() | moment),
        action=draw(st.sampled_from(ACTIONS)),
    )


@settings(max_examples=100, deadline=None)
@given(consent_lists(), queries())
def test_evaluate_is_total_deterministic_and_order_independent(
    consents: list[Consent], query: DecisionQuery
) -> None:
    decision = evaluate(consents, query)
    assert evaluate(consents, query) == decision
    assert evaluate(list(reversed(consents)), query) == decision
    assert decision.purpose == query.purpose
    if decision.rule in (Rule.DEFAULT_POLICY, Rule.NO_ACTIVE_CONSENT):
        assert decision.consent_ids == ()
    elif decision.rule is not Rule.RESTRICTED:
        assert len(decision.consent_ids) == 1
        assert decision.consent_ids[0] in {c.id for c in consents}


@st.composite
def explicit_deny(draw: st.DrawFn, who: ActorRef, purpose: str) -> Consent:
    named = draw(st.sampled_from([None, *lineage(purpose)]))
    purposes = [named] if named else []
    if draw(st.booleans()):
        data = r4_consent(
            "zz-deny", provision("deny", actors=[who], purposes=purposes), recorded="2026-06-01"
        )
    else:
        exception = provision(actors=[who], purposes=purposes, r5=True)
        data = r5_consent("zz-deny", "permit", [exception], date="2026-06-01")
    return parse_consent(data)


@settings(max_examples=100, deadline=None)
@given(consent_lists(), queries(), st.data())
def test_newest_explicit_deny_for_an_actor_always_denies_that_actor(
    consents: list[Consent], query: DecisionQuery, data: st.DataObject
) -> None:
    who = data.draw(st.sampled_from(ACTORS))
    deny = data.draw(explicit_deny(who, query.purpose))
    decision = evaluate([*consents, deny], replace(query, actor=who))
    assert decision.outcome is Outcome.DENY
    assert decision.consent_ids == ("zz-deny",)


def _with_withdrawal(consents: list[Consent], index: int, withdrawal: Withdrawal) -> list[Consent]:
    target = consents[index]
    changed = replace(target, withdrawals=(*target.withdrawals, withdrawal))
    return [*consents[:index], changed, *consents[index + 1 :]]


@settings(max_examples=200, deadline=None)
@given(consent_lists(), queries(), st.data())
def test_after_a_covering_withdrawal_only_a_newer_consent_can_release(
    consents: list[Consent], query: DecisionQuery, data: st.DataObject
) -> None:
    if not consents:
        return
    index = data.draw(st.integers(0, len(consents) - 1))
    withdrawn_for = data.draw(st.sampled_from(lineage(query.purpose)))  # covers the query
    at = query.now - timedelta(days=data.draw(st.integers(0, 400)))
    after = _with_withdrawal(consents, index, Withdrawal(at, withdrawn_for))
    decision = evaluate(after, query)
    newer = {c.id for c in consents if c.recorded is not None and c.recorded > at}
    if decision.permitted:
        assert set(decision.consent_ids) <= newer
        assert decision.consent_ids
    elif decision.rule is Rule.WITHDRAWN:
        assert decision.consent_ids == (consents[index].id,)
    else:
        assert set(decision.consent_ids) <= newer


@settings(max_examples=200, deadline=None)
@given(consent_lists(), queries(), st.data())
def test_withdrawal_without_newer_consent_denies_whatever_the_default(
    consents: list[Consent], query: DecisionQuery, data: st.DataObject
) -> None:
    if not consents:
        return
    index = data.draw(st.integers(0, len(consents) - 1))
    withdrawn_for = data.draw(st.sampled_from(lineage(query.purpose)))
    latest = max((c.recorded for c in consents if c.recorded is not None), default=None)
    at = max(query.now - timedelta(days=1), latest or query.now)
    if at > query.now:
        return
    permissive = ConsentPolicy(defaults={"PurposeOfUse": Outcome.PERMIT})
    decision = evaluate(
        _with_withdrawal(consents, index, Withdrawal(at, withdrawn_for)), query, permissive
    )
    assert (decision.outcome, decision.rule) == (Outcome.DENY, Rule.WITHDRAWN)


@settings(max_examples=200, deadline=None)
@given(consent_lists(), queries(), st.data())
def test_withdrawal_not_covering_the_query_or_not_yet_effective_changes_nothing(
    consents: list[Consent], query: DecisionQuery, data: st.DataObject
) -> None:
    if not consents:
        return
    index = data.draw(st.integers(0, len(consents) - 1))
    unrelated = [p for p in PURPOSES if not implies(p, query.purpose)]
    if data.draw(st.booleans()) and unrelated:
        withdrawal = Withdrawal(query.now, data.draw(st.sampled_from(unrelated)))
    else:
        later = query.now + timedelta(seconds=data.draw(st.integers(1, 10**7)))
        withdrawal = Withdrawal(later, data.draw(st.none() | st.sampled_from(PURPOSES)))
    assert evaluate(_with_withdrawal(consents, index, withdrawal), query) == evaluate(
        consents, query
    )


@settings(max_examples=100, deadline=None)
@given(consent_lists())
def test_compact_form_round_trips(consents: list[Consent]) -> None:
    for consent in consents:
        assert consent_from_dict(consent_to_dict(consent)) == consent
