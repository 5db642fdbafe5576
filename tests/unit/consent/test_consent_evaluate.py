"""The consent decision table: R4 and R5 consents, defaults, hierarchy, restrictions, withdrawal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from caremesh.consent import (
    ActorRef,
    ConsentPolicy,
    DecisionQuery,
    Outcome,
    PatientConsents,
    Rule,
    apply,
    evaluate,
    parse_event,
)
from tests.unit.consent.consent_builders import (
    DR_X,
    NOW,
    ORG_A,
    ORG_B,
    ORG_C_ID,
    ORG_D_ID,
    provision,
    query,
    r4_consent,
    r5_consent,
    withdrawal,
)

P, D = Outcome.PERMIT, Outcome.DENY


@dataclass(frozen=True)
class Case:
    """One row: ledger records, a query, and the decision a user relies on."""

    id: str
    events: list[dict[str, Any]]
    query: DecisionQuery
    outcome: Outcome
    rule: Rule
    consent_ids: tuple[str, ...] | None = None
    provision: str | None = None
    policy: ConsentPolicy = field(default_factory=ConsentPolicy)


def _r4_objection_except_a(cid: str = "c1") -> dict[str, Any]:
    return r4_consent(cid, provision("deny", purposes=["TREAT"], sub=[provision(actors=[ORG_A])]))


def _r4_two_levels() -> dict[str, Any]:
    level2 = provision(types=["MedicationRequest"])
    level1 = provision(actors=[ORG_A], sub=[level2])
    return r4_consent("c2l", provision("deny", purposes=["TREAT"], sub=[level1]))


def _r5_two_levels() -> dict[str, Any]:
    level2 = provision(types=["Observation"], r5=True)
    level1 = provision(actors=[ORG_A], purposes=["TREAT"], sub=[level2], r5=True)
    return r5_consent("r5-2l", "deny", [level1])


def _r5_research_only(cid: str = "r5-research", date: str = "2024-06-01") -> dict[str, Any]:
    return r5_consent(
        cid, "deny", [provision(purposes=["HRESCH"], r5=True)], date=date, category="research"
    )


_DATA_PERIOD = r4_consent(
    "c-dp",
    provision(
        "deny",
        purposes=["TREAT"],
        sub=[provision(data_period=("2020-01-01", "2022-12-31"), actors=[ORG_A])],
    ),
)
_ONLY_HIV_EXPLICIT = r5_consent(
    "r5-hiv", "deny", [provision(labels=["HIV"], actors=[ORG_A], r5=True)]
)
_WITH_R_EXPLICIT = r4_consent(
    "c-r", provision("deny", purposes=["TREAT"], sub=[provision(labels=["R"], actors=[ORG_A])])
)
_RESEARCH_PERMIT = r4_consent("c-rs", provision("permit", purposes=["HRESCH"]), scope="research")
_TREAT_PERMIT = r4_consent("c-t", provision("permit", purposes=["TREAT"]))
_AT_2025 = "2025-01-01T00:00:00Z"

CASES = [
    # -- defaults (no consent) ---------------------------------------------------------------
    Case("default-treat-opt-out-permits", [], query("TREAT"), P, Rule.NO_ACTIVE_CONSENT, ()),
    Case("default-research-opt-in-denies", [], query("HRESCH"), D, Rule.NO_ACTIVE_CONSENT, ()),
    Case("default-etreat-inherits-treat", [], query("ETREAT"), P, Rule.NO_ACTIVE_CONSENT),
    Case("default-clintrch-inherits-hresch", [], query("CLINTRCH"), D, Rule.NO_ACTIVE_CONSENT),
    Case(
        "default-unconfigured-purpose-falls-back-deny",
        [],
        query("HMARKT"),
        D,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "default-configured-public-health-permit",
        [],
        query("THREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
        policy=ConsentPolicy(defaults={"PUBHLTH": P}),
    ),
    Case(
        "default-research-configured-opt-out",
        [],
        query("BIORCH"),
        P,
        Rule.NO_ACTIVE_CONSENT,
        policy=ConsentPolicy(defaults={"TREAT": P, "HRESCH": P}),
    ),
    # -- R4 root provision ---------------------------------------------------------------------
    Case(
        "r4-root-deny-treat-objection",
        [r4_consent("c1", provision("deny", purposes=["TREAT"]))],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("c1",),
        "Consent.provision",
    ),
    Case(
        "r4-treat-deny-covers-etreat",
        [r4_consent("c1", provision("deny", purposes=["TREAT"]))],
        query("ETREAT"),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-treat-permit-covers-break-the-glass",
        [r4_consent("c1", provision("permit", purposes=["TREAT"]))],
        query("BTG"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-research-opt-in-permits",
        [_RESEARCH_PERMIT],
        query("HRESCH"),
        P,
        Rule.CONSENT_ROOT,
        ("c-rs",),
    ),
    Case(
        "r4-hresch-permit-covers-clintrch",
        [_RESEARCH_PERMIT],
        query("CLINTRCH"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-hresch-permit-does-not-speak-to-treat",
        [r4_consent("c1", provision("deny", purposes=["TREAT"])), _RESEARCH_PERMIT],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("c1",),
    ),
    Case(
        "r4-clintrch-permit-does-not-cover-hresch",
        [r4_consent("c1", provision("permit", purposes=["CLINTRCH"]))],
        query("HRESCH"),
        D,
        Rule.DEFAULT_POLICY,
        (),
    ),
    Case(
        "r4-nested-exception-permits-org-a",
        [_r4_objection_except_a()],
        query("TREAT", ORG_A),
        P,
        Rule.CONSENT_PROVISION,
        ("c1",),
        "Consent.provision.provision[0]",
    ),
    Case(
        "r4-nested-exception-leaves-org-b-denied",
        [_r4_objection_except_a()],
        query("TREAT", ORG_B),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-two-levels-org-a-observation-permitted",
        [_r4_two_levels()],
        query("TREAT", ORG_A, resource_type="Observation"),
        P,
        Rule.CONSENT_PROVISION,
        provision="Consent.provision.provision[0]",
    ),
    Case(
        "r4-two-levels-org-a-medication-denied-again",
        [_r4_two_levels()],
        query("TREAT", ORG_A, resource_type="MedicationRequest"),
        D,
        Rule.CONSENT_PROVISION,
        provision="Consent.provision.provision[0].provision[0]",
    ),
    Case(
        "r4-actor-by-identifier",
        [r4_consent("c1", provision("deny", sub=[provision(actors=[ORG_C_ID])]))],
        query("TREAT", ORG_C_ID),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r4-actor-other-identifier-not-matched",
        [r4_consent("c1", provision("deny", sub=[provision(actors=[ORG_C_ID])]))],
        query("TREAT", ORG_D_ID),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-actor-absolute-url-matches-relative",
        [
            r4_consent(
                "c1",
                provision(
                    "deny",
                    sub=[
                        provision(
                            actors=[ActorRef("https://fhir.example.test/fhir/Organization/org-a")]
                        )
                    ],
                ),
            )
        ],
        query("TREAT", ORG_A),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r4-practitioner-actor-does-not-cover-org",
        [r4_consent("c1", provision("deny", sub=[provision(actors=[DR_X])]))],
        query("TREAT", ORG_A),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-root-actor-mismatch-falls-to-default",
        [r4_consent("c1", provision("permit", purposes=["HRESCH"], actors=[ORG_A]))],
        query("HRESCH", ORG_B),
        D,
        Rule.DEFAULT_POLICY,
    ),
    Case(
        "r4-class-deny-observation",
        [r4_consent("c1", provision("permit", sub=[provision(types=["Observation"])]))],
        query("TREAT", resource_type="Observation"),
        D,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r4-class-other-type-permitted",
        [r4_consent("c1", provision("permit", sub=[provision(types=["Observation"])]))],
        query("TREAT", resource_type="Condition"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-sibling-conflict-deny-wins",
        [
            r4_consent(
                "c1",
                provision(
                    "permit",
                    purposes=["TREAT"],
                    sub=[
                        provision("permit", actors=[ORG_A]),
                        provision("deny", actors=[ORG_A]),
                    ],
                ),
            )
        ],
        query("TREAT", ORG_A),
        D,
        Rule.CONSENT_PROVISION,
        provision="Consent.provision.provision[1]",
    ),
    Case(
        "r4-action-access-covers-disclose",
        [r4_consent("c1", provision("deny", sub=[provision(actors=[ORG_A], actions=["access"])]))],
        query("TREAT", ORG_A),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r4-action-correct-does-not-cover-disclose",
        [r4_consent("c1", provision("permit", sub=[provision(actions=["correct"])]))],
        query("TREAT"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-unsupported-code-assumed-to-match-a-deny",
        [
            r4_consent(
                "c1",
                provision(
                    "permit",
                    sub=[provision(extra={"code": [{"coding": [{"code": "x"}]}]})],
                ),
            )
        ],
        query("TREAT"),
        D,
        Rule.CONSENT_PROVISION,
    ),
    # -- R5 decision + provision[] --------------------------------------------------------------
    Case(
        "r5-decision-deny",
        [r5_consent("r5", "deny")],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("r5",),
        "Consent.decision",
    ),
    Case(
        "r5-decision-permit-research",
        [r5_consent("r5", "permit")],
        query("HRESCH"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r5-exception-permits-org-a",
        [r5_consent("r5", "deny", [provision(actors=[ORG_A], purposes=["TREAT"], r5=True)])],
        query("TREAT", ORG_A),
        P,
        Rule.CONSENT_PROVISION,
        ("r5",),
        "Consent.provision[0]",
    ),
    Case(
        "r5-exception-leaves-org-b-denied",
        [r5_consent("r5", "deny", [provision(actors=[ORG_A], purposes=["TREAT"], r5=True)])],
        query("TREAT", ORG_B),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r5-exception-for-etreat-only-denies-plain-treat",
        [r5_consent("r5", "deny", [provision(purposes=["ETREAT"], r5=True)])],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r5-exception-for-treat-covers-etreat",
        [r5_consent("r5", "deny", [provision(purposes=["TREAT"], r5=True)])],
        query("ETREAT"),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r5-research-consent-does-not-speak-to-treat",
        [_r5_research_only()],
        query("TREAT"),
        P,
        Rule.DEFAULT_POLICY,
        (),
    ),
    Case(
        "r5-research-consent-permits-clintrch",
        [_r5_research_only()],
        query("CLINTRCH"),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r5-nested-flips-again-observation-denied",
        [_r5_two_levels()],
        query("TREAT", ORG_A, resource_type="Observation"),
        D,
        Rule.CONSENT_PROVISION,
        provision="Consent.provision[0].provision[0]",
    ),
    Case(
        "r5-nested-org-a-condition-permitted",
        [_r5_two_levels()],
        query("TREAT", ORG_A, resource_type="Condition"),
        P,
        Rule.CONSENT_PROVISION,
        provision="Consent.provision[0]",
    ),
    Case(
        "r5-actor-by-identifier-denied",
        [r5_consent("r5", "permit", [provision(actors=[ORG_C_ID], r5=True)])],
        query("TREAT", ORG_C_ID),
        D,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r5-actor-deny-without-query-actor-matches-fail-closed",
        [r5_consent("r5", "permit", [provision(actors=[ORG_C_ID], r5=True)])],
        query("TREAT", None),
        D,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "r5-actor-permit-without-query-actor-does-not-match",
        [r5_consent("r5", "deny", [provision(actors=[ORG_C_ID], r5=True)])],
        query("TREAT", None),
        D,
        Rule.CONSENT_ROOT,
    ),
    # -- period and status ------------------------------------------------------------------------
    Case(
        "r5-expired-period-ignored",
        [r5_consent("r5", "deny", period=("2020-01-01", "2024-12-31"))],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "r5-period-end-inclusive-whole-day",
        [r5_consent("r5", "deny", period=("2020-01-01", "2025-06-01"))],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r5-not-yet-started",
        [r5_consent("r5", "deny", period=("2025-07-01", None))],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "r4-root-period-expired",
        [r4_consent("c1", provision("deny", period=("2020-01", "2024-12")))],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "r4-nested-period-expired-exception-lapses",
        [
            r4_consent(
                "c1",
                provision(
                    "deny",
                    sub=[provision(actors=[ORG_A], period=("2024-01-01", "2025-05-31T23:59:59Z"))],
                ),
            )
        ],
        query("TREAT", ORG_A),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "r4-inactive-ignored",
        [r4_consent("c1", provision("deny"), status="inactive")],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "r4-proposed-ignored",
        [r4_consent("c1", provision("permit", purposes=["HRESCH"]), status="proposed")],
        query("HRESCH"),
        D,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "r5-entered-in-error-removed",
        [r5_consent("r5", "deny"), r5_consent("r5", "deny", status="entered-in-error")],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
    ),
    Case(
        "upsert-replaces-earlier-version",
        [r5_consent("r5", "deny"), r5_consent("r5", "permit", date="2024-02-01")],
        query("HRESCH"),
        P,
        Rule.CONSENT_ROOT,
        ("r5",),
    ),
    # -- several consents: the newest wins ------------------------------------------------------
    Case(
        "newer-deny-beats-older-permit",
        [
            r4_consent("old", provision("permit", purposes=["TREAT"]), recorded="2023-01-01"),
            r4_consent("new", provision("deny", purposes=["TREAT"]), recorded="2024-01-01"),
        ],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("new",),
    ),
    Case(
        "newer-r5-permit-beats-older-r4-deny",
        [
            r4_consent("old", provision("deny", purposes=["TREAT"]), recorded="2023-01-01"),
            r5_consent("new", "permit", date="2024-03-01"),
        ],
        query("TREAT"),
        P,
        Rule.CONSENT_ROOT,
        ("new",),
    ),
    Case(
        "same-date-greatest-id-wins",
        [
            r4_consent("b", provision("deny", purposes=["TREAT"]), recorded="2024-01-01"),
            r4_consent("a", provision("permit", purposes=["TREAT"]), recorded="2024-01-01"),
        ],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("b",),
    ),
    Case(
        "newer-expired-consent-lets-older-apply",
        [
            r4_consent("old", provision("deny", purposes=["TREAT"]), recorded="2023-01-01"),
            r5_consent("new", "permit", date="2024-01-01", period=(None, "2024-12-31")),
        ],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("old",),
    ),
    Case(
        "newer-org-a-permit-keeps-older-objection-for-org-b",
        [
            r4_consent("old", provision("deny", purposes=["TREAT"]), recorded="2023-01-01"),
            r4_consent(
                "new",
                provision("permit", purposes=["TREAT"], actors=[ORG_A]),
                recorded="2024-01-01",
            ),
        ],
        query("TREAT", ORG_B),
        D,
        Rule.CONSENT_ROOT,
        ("old",),
    ),
    # -- restricted and sensitive data ------------------------------------------------------------
    Case(
        "restricted-r-default-permit-denied", [], query("TREAT", labels=["R"]), D, Rule.RESTRICTED
    ),
    Case(
        "restricted-v-root-permit-denied",
        [r4_consent("c1", provision("permit", purposes=["TREAT"]))],
        query("TREAT", labels=["V"]),
        D,
        Rule.RESTRICTED,
        ("c1",),
    ),
    Case(
        "restricted-r-explicit-permit",
        [_WITH_R_EXPLICIT],
        query("TREAT", labels=["R"]),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "restricted-r-explicit-permit-other-actor-denied",
        [_WITH_R_EXPLICIT],
        query("TREAT", ORG_B, labels=["R"]),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "sensitive-hiv-r5-root-permit-denied",
        [r5_consent("r5", "permit")],
        query("TREAT", labels=["HIV"]),
        D,
        Rule.RESTRICTED,
    ),
    Case(
        "sensitive-hiv-explicit-permit",
        [_ONLY_HIV_EXPLICIT],
        query("TREAT", labels=["HIV"]),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "sensitive-explicit-must-list-every-restricted-label",
        [_ONLY_HIV_EXPLICIT],
        query("TREAT", labels=["HIV", "R"]),
        D,
        Rule.RESTRICTED,
    ),
    Case(
        "sensitive-category-not-configured-is-ordinary",
        [],
        query("TREAT", labels=["HIV"]),
        P,
        Rule.NO_ACTIVE_CONSENT,
        policy=ConsentPolicy(sensitive_labels=frozenset()),
    ),
    Case("normal-label-needs-nothing", [], query("TREAT", labels=["N"]), P, Rule.NO_ACTIVE_CONSENT),
    # -- dataPeriod --------------------------------------------------------------------------------
    Case(
        "data-period-contains-date",
        [_DATA_PERIOD],
        query("TREAT", data_date=datetime(2021, 5, 1, tzinfo=UTC)),
        P,
        Rule.CONSENT_PROVISION,
    ),
    Case(
        "data-period-after-end",
        [_DATA_PERIOD],
        query("TREAT", data_date=datetime(2023, 1, 1, tzinfo=UTC)),
        D,
        Rule.CONSENT_ROOT,
    ),
    Case("data-period-without-data-date", [_DATA_PERIOD], query("TREAT"), D, Rule.CONSENT_ROOT),
    # -- withdrawal -------------------------------------------------------------------------------
    Case(
        "withdrawal-of-research-consent-denies-research",
        [_RESEARCH_PERMIT, withdrawal("c-rs", _AT_2025, "HRESCH")],
        query("CLINTRCH"),
        D,
        Rule.WITHDRAWN,
        ("c-rs",),
    ),
    Case(
        "withdrawal-of-treat-permit-denies-despite-treat-default",
        [_TREAT_PERMIT, withdrawal("c-t", _AT_2025, "TREAT")],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "withdrawal-of-treat-for-all-purposes-denies-treat",
        [_TREAT_PERMIT, withdrawal("c-t", _AT_2025)],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "withdrawn-treat-covers-etreat",
        [_TREAT_PERMIT, withdrawal("c-t", _AT_2025, "TREAT")],
        query("ETREAT"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "withdrawn-etreat-does-not-cover-treat",
        [_TREAT_PERMIT, withdrawal("c-t", _AT_2025, "ETREAT")],
        query("TREAT"),
        P,
        Rule.CONSENT_ROOT,
        ("c-t",),
    ),
    Case(
        "withdrawn-etreat-covers-break-the-glass",
        [_TREAT_PERMIT, withdrawal("c-t", _AT_2025, "ETREAT")],
        query("BTG"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "withdrawal-effective-at-its-instant",
        [_TREAT_PERMIT, withdrawal("c-t", NOW.isoformat(), "TREAT")],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
    ),
    Case(
        "withdrawal-then-newer-permit-permits",
        [
            _TREAT_PERMIT,
            withdrawal("c-t", _AT_2025, "TREAT"),
            r5_consent("c-new", "permit", date="2025-03-01"),
        ],
        query("TREAT"),
        P,
        Rule.CONSENT_ROOT,
        ("c-new",),
    ),
    Case(
        "withdrawal-then-newer-deny-denies-by-that-consent",
        [
            _TREAT_PERMIT,
            withdrawal("c-t", _AT_2025, "TREAT"),
            r4_consent("c-new", provision("deny", purposes=["TREAT"]), recorded="2025-03-01"),
        ],
        query("TREAT"),
        D,
        Rule.CONSENT_ROOT,
        ("c-new",),
    ),
    Case(
        "consent-recorded-before-the-withdrawal-does-not-lift-it",
        [
            _TREAT_PERMIT,
            r5_consent("c-mid", "permit", date="2024-06-01"),
            withdrawal("c-t", _AT_2025, "TREAT"),
        ],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "newer-consent-for-another-purpose-does-not-lift-withdrawal",
        [
            _TREAT_PERMIT,
            withdrawal("c-t", _AT_2025, "TREAT"),
            _r5_research_only("c-new", date="2025-03-01"),
        ],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("c-t",),
    ),
    Case(
        "withdrawal-for-hresch-only-leaves-treat-unaffected",
        [r5_consent("r5", "permit"), withdrawal("r5", _AT_2025, "HRESCH")],
        query("TREAT"),
        P,
        Rule.CONSENT_ROOT,
        ("r5",),
    ),
    Case(
        "withdrawal-for-hresch-denies-clintrch",
        [r5_consent("r5", "permit"), withdrawal("r5", _AT_2025, "HRESCH")],
        query("CLINTRCH"),
        D,
        Rule.WITHDRAWN,
        ("r5",),
    ),
    Case(
        "withdrawal-of-research-consent-for-all-purposes-leaves-treat-default",
        [_RESEARCH_PERMIT, withdrawal("c-rs", _AT_2025)],
        query("TREAT"),
        P,
        Rule.NO_ACTIVE_CONSENT,
        (),
    ),
    Case(
        "withdrawal-of-an-objection-is-still-restrictive",
        [r4_consent("c1", provision("deny", purposes=["TREAT"])), withdrawal("c1", _AT_2025)],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("c1",),
    ),
    Case(
        "withdrawal-in-the-future-not-yet-effective",
        [_RESEARCH_PERMIT, withdrawal("c-rs", "2025-07-01T00:00:00Z")],
        query("HRESCH"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "withdrawal-for-narrower-purpose-keeps-broader",
        [_RESEARCH_PERMIT, withdrawal("c-rs", _AT_2025, "CLINTRCH")],
        query("BIORCH"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "withdrawal-before-consent-arrives-still-applies",
        [withdrawal("c-rs", "2024-06-01T00:00:00Z"), _RESEARCH_PERMIT],
        query("HRESCH"),
        D,
        Rule.WITHDRAWN,
    ),
    Case(
        "withdrawal-then-new-version-is-a-reconsent",
        [
            _RESEARCH_PERMIT,
            withdrawal("c-rs", "2024-02-01T00:00:00Z"),
            r4_consent(
                "c-rs", provision("permit", purposes=["HRESCH"]), recorded="2024-03-01T00:00:00Z"
            ),
        ],
        query("HRESCH"),
        P,
        Rule.CONSENT_ROOT,
    ),
    Case(
        "withdrawal-of-newest-permit-is-not-undone-by-an-older-permit",
        [
            r4_consent("old", provision("permit", purposes=["TREAT"]), recorded="2023-01-01"),
            r4_consent("new", provision("permit", purposes=["TREAT"]), recorded="2024-01-01"),
            withdrawal("new", _AT_2025),
        ],
        query("TREAT"),
        D,
        Rule.WITHDRAWN,
        ("new",),
    ),
]


def _fold(events: list[dict[str, Any]]) -> PatientConsents:
    state = PatientConsents()
    for record in events:
        state = apply(state, parse_event(record))
    return state


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_decision_table(case: Case) -> None:
    decision = evaluate(_fold(case.events).consents, case.query, case.policy)
    assert (decision.outcome, decision.rule) == (case.outcome, case.rule)
    assert decision.purpose == case.query.purpose
    if case.consent_ids is not None:
        assert decision.consent_ids == case.consent_ids
    if case.provision is not None:
        assert decision.provision == case.provision


def test_the_table_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


def test_default_decisions_name_no_consent() -> None:
    decision = evaluate([], query("TREAT"))
    assert decision.consent_ids == ()
    assert decision.provision is None
    assert decision.permitted


def test_naive_query_times_are_read_as_utc() -> None:
    consents = _fold([r5_consent("r5", "deny", period=(None, "2025-06-01T12:00:00Z"))]).consents
    naive = query("TREAT", now=NOW.replace(tzinfo=None))
    assert evaluate(consents, naive).outcome is D
    later = query("TREAT", now=datetime(2025, 6, 1, 12, 0, 1))
    assert evaluate(consents, later).rule is Rule.NO_ACTIVE_CONSENT
