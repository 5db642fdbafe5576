"""Consents mean what they say (issue 33): declared scope, R4 base from policyRule, fail closed.

Each row asks: does ignoring part of the consent ever permit more than the patient allowed?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from caremesh.consent import ActorRef, DecisionQuery, Outcome, Rule, evaluate, parse_consent
from caremesh.errors import RejectedInputError
from tests.unit.consent.consent_builders import (
    ACT_CODE,
    ORG_A,
    ORG_B,
    provision,
    query,
    r4_consent,
    r5_consent,
)

P, D = Outcome.PERMIT, Outcome.DENY
STUDY = ActorRef(reference="ResearchStudy/s1")


def _policy_rule(data: dict[str, Any], code: str | None) -> dict[str, Any]:
    out = dict(data)
    if code is None:
        out.pop("policyRule", None)
    else:
        out["policyRule"] = {"coding": [{"system": ACT_CODE, "code": code}]}
    return out


def _r4_deny_all_but_study(scope: str = "patient-privacy") -> dict[str, Any]:
    study = provision(
        "permit", actors=[STUDY], purposes=["HRESCH"], types=["Observation"], actions=["access"]
    )
    return r4_consent("deny-but-s1", provision("deny", sub=[study]), scope=scope)


def _r5_deny_all_but_study(category: str | None = None) -> dict[str, Any]:
    study = provision(actors=[STUDY], purposes=["HRESCH"], types=["Observation"], r5=True)
    return r5_consent("deny-but-s1", "deny", [study], category=category)


def _r4_untyped(code: str | None, root: dict[str, Any]) -> dict[str, Any]:
    return _policy_rule(r4_consent("untyped", root), code)


def _custodian(org: str = "Organization/org-a") -> dict[str, Any]:
    role = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}
        ]
    }
    return {"actor": [{"role": role, "reference": {"reference": org}}]}  # fmt: skip


def _data(meaning: str, reference: str) -> dict[str, Any]:
    return {"data": [{"meaning": meaning, "reference": {"reference": reference}}]}


@dataclass(frozen=True)
class Row:
    """One consent, one query, the decision the patient's words give."""

    id: str
    consent: dict[str, Any]
    query: DecisionQuery
    outcome: Outcome
    rule: Rule


ROWS = [
    # -- a root deny without conditions denies every purpose but its exceptions ---------------
    Row("r4-deny-all-but-study-treat-org-a", _r4_deny_all_but_study(), query("TREAT"), D,
        Rule.CONSENT_ROOT),
    Row("r4-deny-all-but-study-treat-org-b", _r4_deny_all_but_study(), query("TREAT", ORG_B), D,
        Rule.CONSENT_ROOT),
    Row("r4-deny-all-but-study-etreat", _r4_deny_all_but_study(), query("ETREAT"), D,
        Rule.CONSENT_ROOT),
    Row("r4-deny-all-but-study-treat-no-actor", _r4_deny_all_but_study(),
        query("TREAT", None), D, Rule.CONSENT_ROOT),
    Row("r4-deny-all-but-study-the-study", _r4_deny_all_but_study(),
        query("HRESCH", STUDY), P, Rule.CONSENT_PROVISION),
    Row("r4-deny-all-but-study-study-other-type", _r4_deny_all_but_study(),
        query("HRESCH", STUDY, resource_type="Condition"), D, Rule.CONSENT_ROOT),
    Row("r4-deny-all-but-study-other-study", _r4_deny_all_but_study(),
        query("HRESCH", ORG_B), D, Rule.CONSENT_ROOT),
    Row("r5-deny-all-but-study-treat-org-a", _r5_deny_all_but_study(), query("TREAT"), D,
        Rule.CONSENT_ROOT),
    Row("r5-deny-all-but-study-treat-org-b", _r5_deny_all_but_study(), query("TREAT", ORG_B), D,
        Rule.CONSENT_ROOT),
    Row("r5-deny-all-but-study-the-study", _r5_deny_all_but_study(),
        query("HRESCH", STUDY), P, Rule.CONSENT_PROVISION),
    # -- what a consent covers is what it declares ----------------------------------------------
    Row("r4-research-scope-speaks-to-research-only", _r4_deny_all_but_study("research"),
        query("TREAT"), P, Rule.DEFAULT_POLICY),
    Row("r4-research-scope-still-denies-other-research", _r4_deny_all_but_study("research"),
        query("CLINTRCH", ORG_B), D, Rule.CONSENT_ROOT),
    Row("r5-research-category-speaks-to-research-only", _r5_deny_all_but_study("research"),
        query("TREAT"), P, Rule.DEFAULT_POLICY),
    Row("r5-research-category-permits-the-study", _r5_deny_all_but_study("research"),
        query("CLINTRCH", STUDY), P, Rule.CONSENT_PROVISION),
    Row("r4-treatment-scope-covers-research-too", _r4_deny_all_but_study("treatment"),
        query("HRESCH", ORG_B), D, Rule.CONSENT_ROOT),
    # -- R4 base decision from policyRule when the root has no type: the root is its exception --
    Row("r4-optin-root-period-permits-inside", _r4_untyped("OPTIN", provision(
        period=("2024-01-01", "2026-01-01"))), query("TREAT"), P, Rule.CONSENT_ROOT),
    Row("r4-optout-root-period-only-denies-inside", _r4_untyped("OPTOUT", provision(
        period=("2024-01-01", "2026-01-01"))), query("TREAT"), D, Rule.CONSENT_ROOT),
    Row("r4-root-period-over-leaves-the-policy", _r4_untyped("OPTOUT", provision(
        period=("2020-01-01", "2021-01-01"))), query("TREAT"), P, Rule.NO_ACTIVE_CONSENT),
    Row("r4-optout-root-actor-is-a-permit-for-that-actor", _r4_untyped("OPTOUT", provision(
        actors=[ORG_A])), query("TREAT"), P, Rule.CONSENT_PROVISION),
    Row("r4-optout-root-actor-others-get-the-base-deny", _r4_untyped("OPTOUT", provision(
        actors=[ORG_A])), query("TREAT", ORG_B), D, Rule.CONSENT_ROOT),
    Row("r4-optin-root-actor-is-a-deny-for-that-actor", _r4_untyped("OPTIN", provision(
        actors=[ORG_A])), query("TREAT"), D, Rule.CONSENT_PROVISION),
    Row("r4-optin-root-actor-others-get-the-base-permit", _r4_untyped("OPTIN", provision(
        actors=[ORG_A])), query("HRESCH", ORG_B), P, Rule.CONSENT_ROOT),
    Row("r4-optin-root-actor-no-actor-asked-is-denied", _r4_untyped("OPTIN", provision(
        actors=[ORG_A])), query("TREAT", None), D, Rule.CONSENT_PROVISION),
    Row("r4-root-purpose-does-not-narrow-the-base", _r4_untyped("OPTOUT", provision(
        actors=[ORG_A], purposes=["ETREAT"])), query("TREAT"), D, Rule.CONSENT_ROOT),
    Row("r4-root-purpose-exception-applies-to-its-purpose", _r4_untyped("OPTOUT", provision(
        actors=[ORG_A], purposes=["ETREAT"])), query("ETREAT"), P, Rule.CONSENT_PROVISION),
    Row("r4-nested-under-root-exception-flips-again", _r4_untyped("OPTOUT", provision(
        actors=[ORG_A], sub=[provision(labels=["PSY"])])), query("TREAT", labels=["PSY"]), D,
        Rule.CONSENT_PROVISION),
    Row("r4-optoute-exception-permits", _r4_untyped("OPTOUTE", provision(
        sub=[provision(actors=[ORG_A])])), query("TREAT"), P, Rule.CONSENT_PROVISION),
    Row("r4-optoute-others-denied", _r4_untyped("OPTOUTE", provision(
        sub=[provision(actors=[ORG_A])])), query("TREAT", ORG_B), D, Rule.CONSENT_ROOT),
    Row("r4-optinr-restriction-denies", _r4_untyped("OPTINR", provision(
        sub=[provision(actors=[ORG_A])])), query("HRESCH"), D, Rule.CONSENT_PROVISION),
    Row("r4-optinr-others-permitted", _r4_untyped("OPTINR", provision(
        sub=[provision(actors=[ORG_A])])), query("HRESCH", ORG_B), P, Rule.CONSENT_ROOT),
    Row("r4-nested-type-wins-over-flip", _r4_untyped("OPTOUT", provision(
        sub=[provision("deny", actors=[ORG_A])])), query("TREAT"), D, Rule.CONSENT_PROVISION),
    Row("r4-typed-root-wins-over-policy-rule", _policy_rule(r4_consent("t", provision(
        "deny", actors=[ORG_A])), "OPTIN"), query("TREAT"), D, Rule.CONSENT_ROOT),
    # -- fail closed: a deny matches what the query does not answer ----------------------------
    Row("deny-class-matches-unknown-resource-type", r5_consent("c", "permit", [provision(
        types=["Observation"], r5=True)]), query("TREAT", resource_type=None), D,
        Rule.CONSENT_PROVISION),
    Row("deny-data-period-matches-unknown-data-date", r5_consent("c", "permit", [provision(
        data_period=("2020-01-01", "2021-01-01"), r5=True)]), query("TREAT"), D,
        Rule.CONSENT_PROVISION),
    Row("permit-data-period-needs-a-data-date", r5_consent("c", "deny", [provision(
        data_period=("2020-01-01", "2021-01-01"), r5=True)]), query("TREAT"), D,
        Rule.CONSENT_ROOT),
    Row("deny-foreign-class-system-matches-every-type", r4_consent("c", provision("permit", sub=[
        provision(extra={"class": [{"system": "urn:example:profiles", "code": "x"}]})])),
        query("TREAT"), D, Rule.CONSENT_PROVISION),
    Row("deny-data-authoredby-matches-everything", r4_consent("c", provision("permit", sub=[
        provision(extra={"data": [{"meaning": "authoredby",
                                   "reference": {"reference": "Organization/x"}}]})])),
        query("TREAT"), D, Rule.CONSENT_PROVISION),
    # -- actor roles: a custodian names who holds the data, matched to the query's custodian --
    Row("deny-custodian-matches-an-unsaid-custodian", r5_consent("c", "permit", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_B), D, Rule.CONSENT_PROVISION),
    Row("deny-custodian-matches-that-custodian", r5_consent("c", "permit", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_B, custodian=ORG_A), D,
        Rule.CONSENT_PROVISION),
    Row("deny-custodian-leaves-other-custodians", r5_consent("c", "permit", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_B, custodian=ORG_B), P,
        Rule.CONSENT_ROOT),
    Row("permit-custodian-needs-the-custodian-said", r5_consent("c", "deny", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_A), D, Rule.CONSENT_ROOT),
    Row("permit-custodian-matches-that-custodian", r5_consent("c", "deny", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_B, custodian=ORG_A), P,
        Rule.CONSENT_PROVISION),
    Row("permit-custodian-not-another-custodian", r5_consent("c", "deny", [provision(
        r5=True, extra=_custodian())]), query("TREAT", ORG_B, custodian=ORG_B), D,
        Rule.CONSENT_ROOT),
    Row("r4-optout-custodian-root-denies-everyone", _r4_untyped("OPTOUT", provision(
        extra=_custodian())), query("TREAT", ORG_B), D, Rule.CONSENT_ROOT),
    Row("r4-optin-custodian-root-denies-its-data", _r4_untyped("OPTIN", provision(
        extra=_custodian())), query("TREAT", ORG_B, custodian=ORG_A), D, Rule.CONSENT_PROVISION),
    Row("r4-optin-custodian-root-leaves-other-data", _r4_untyped("OPTIN", provision(
        extra=_custodian())), query("TREAT", ORG_B, custodian=ORG_B), P, Rule.CONSENT_ROOT),
    Row("permit-custodian-and-recipient-needs-both-said", r5_consent("c", "deny", [provision(
        r5=True, extra={"actor": [*_custodian()["actor"], *provision(actors=[ORG_A])["actor"]]},
    )]), query("TREAT", ORG_A), D, Rule.CONSENT_ROOT),
    Row("permit-custodian-and-recipient-both-match", r5_consent("c", "deny", [provision(
        r5=True, extra={"actor": [*_custodian()["actor"], *provision(actors=[ORG_A])["actor"]]},
    )]), query("TREAT", ORG_A, custodian=ORG_A), P, Rule.CONSENT_PROVISION),
    Row("permit-custodian-and-recipient-other-recipient", r5_consent("c", "deny", [provision(
        r5=True, extra={"actor": [*_custodian()["actor"], *provision(actors=[ORG_A])["actor"]]},
    )]), query("TREAT", ORG_B, custodian=ORG_A), D, Rule.CONSENT_ROOT),
    Row("permit-author-role-never-matches", r5_consent("c", "deny", [provision(
        r5=True, extra={"actor": [{"role": {"coding": [{"code": "AUT"}]},
                                   "reference": {"reference": "Organization/org-a"}}]})]),
        query("TREAT", ORG_A, custodian=ORG_A), D, Rule.CONSENT_ROOT),
    # -- provision.data: instance is that record, related also what refers to it -------------
    Row("deny-data-instance-denies-that-record", r5_consent("c", "permit", [provision(
        r5=True, extra=_data("instance", "Task/t1"))]), query("TREAT", resource="Task/t1",
        references=[]), D, Rule.CONSENT_PROVISION),
    Row("deny-data-instance-leaves-a-record-referring-to-it", r5_consent("c", "permit", [
        provision(r5=True, extra=_data("instance", "Task/t1"))]), query("TREAT",
        resource="Observation/o1", references=["Task/t1"]), P, Rule.CONSENT_ROOT),
    Row("deny-data-related-denies-a-record-referring-to-it", r5_consent("c", "permit", [
        provision(r5=True, extra=_data("related", "Task/t1"))]), query("TREAT",
        resource="Observation/o1", references=["Task/t1"]), D, Rule.CONSENT_PROVISION),
    Row("deny-data-related-leaves-an-unrelated-record", r5_consent("c", "permit", [provision(
        r5=True, extra=_data("related", "Task/t1"))]), query("TREAT", resource="Observation/o2",
        references=["Task/t2"]), P, Rule.CONSENT_ROOT),
    Row("deny-data-related-matches-unsaid-references", r5_consent("c", "permit", [provision(
        r5=True, extra=_data("related", "Task/t1"))]), query("TREAT", resource="Observation/o2"),
        D, Rule.CONSENT_PROVISION),
    Row("deny-data-matches-an-unsaid-record", r5_consent("c", "permit", [provision(
        r5=True, extra=_data("instance", "Task/t1"))]), query("TREAT"), D,
        Rule.CONSENT_PROVISION),
    Row("permit-data-instance-permits-that-record", r5_consent("c", "deny", [provision(
        r5=True, extra=_data("instance", "Task/t1"))]), query("TREAT", resource="Task/t1"), P,
        Rule.CONSENT_PROVISION),
    Row("permit-data-needs-the-record-said", r5_consent("c", "deny", [provision(
        r5=True, extra=_data("instance", "Task/t1"))]), query("TREAT"), D, Rule.CONSENT_ROOT),
    Row("permit-data-related-needs-the-references-said", r5_consent("c", "deny", [provision(
        r5=True, extra=_data("related", "Task/t1"))]), query("TREAT", resource="Observation/o1"),
        D, Rule.CONSENT_ROOT),
    Row("permit-data-related-permits-a-record-referring-to-it", r5_consent("c", "deny", [
        provision(r5=True, extra=_data("related", "Task/t1"))]), query("TREAT",
        resource="Observation/o1", references=["Task/t1"]), P, Rule.CONSENT_PROVISION),
    Row("permit-data-dependents-never-matches", r5_consent("c", "deny", [provision(
        r5=True, extra=_data("dependents", "Task/t1"))]), query("TREAT", resource="Task/t1",
        references=[]), D, Rule.CONSENT_ROOT),
    Row("deny-data-authoredby-matches-a-said-record", r5_consent("c", "permit", [provision(
        r5=True, extra=_data("authoredby", "Organization/x"))]), query("TREAT",
        resource="Observation/o1", references=[]), D, Rule.CONSENT_PROVISION),
    # -- a deny that applies only because the query does not say: its permits are not reached -
    Row("assumed-root-deny-does-not-reach-its-permits", r4_consent("c", provision("deny",
        types=["Observation"], sub=[provision(actors=[ORG_A])])),
        query("HRESCH", resource_type=None), D, Rule.CONSENT_ROOT),
    Row("known-root-deny-reaches-its-permits", r4_consent("c", provision("deny",
        types=["Observation"], sub=[provision(actors=[ORG_A])])),
        query("HRESCH", resource_type="Observation"), P, Rule.CONSENT_PROVISION),
    Row("unevaluated-root-deny-does-not-reach-its-permits", r4_consent("c", provision("deny",
        extra={"code": [{"coding": [{"code": "x"}]}]}, sub=[provision(actors=[ORG_A])])),
        query("HRESCH"), D, Rule.CONSENT_ROOT),
    Row("assumed-nested-deny-decides", r5_consent("c", "permit", [provision(r5=True,
        data_period=("2020-01-01", "2021-01-01"), sub=[provision(actors=[ORG_A], r5=True)])]),
        query("TREAT"), D, Rule.CONSENT_PROVISION),
    Row("deny-author-role-still-needs-its-recipient", r5_consent("c", "permit", [provision(
        r5=True, extra={"actor": [{"role": {"coding": [{"code": "AUT"}]},
                                   "reference": {"reference": "Organization/x"}},
                                  *provision(actors=[ORG_A])["actor"]]})]),
        query("TREAT", ORG_B), P, Rule.CONSENT_ROOT),
    Row("deny-author-role-with-its-recipient-is-assumed", r5_consent("c", "permit", [provision(
        r5=True, extra={"actor": [{"role": {"coding": [{"code": "AUT"}]},
                                   "reference": {"reference": "Organization/x"}},
                                  *provision(actors=[ORG_A])["actor"]]})]),
        query("TREAT", ORG_A), D, Rule.CONSENT_PROVISION),
    # -- a permit scoped by an element caremesh does not evaluate never permits ---------------
    Row("permit-on-code-never-matches", r5_consent("c", "deny", [provision(
        r5=True, extra={"code": [{"coding": [{"code": "x"}]}]})]), query("TREAT"), D,
        Rule.CONSENT_ROOT),
    Row("r4-permit-on-class-and-code-never-matches", r4_consent("c", provision("deny", sub=[
        provision(extra={"class": [{"system": "urn:ietf:bcp:13", "code": "text/xml"}],
                         "code": [{"coding": [{"code": "x"}]}]})])), query("TREAT"), D,
        Rule.CONSENT_ROOT),
    Row("r4-optin-root-on-data-denies-everything", _r4_untyped("OPTIN", provision(extra={
        "data": [{"meaning": "related", "reference": {"reference": "Task/t1"}}]})),
        query("TREAT", ORG_B, resource_type="Condition"), D, Rule.CONSENT_PROVISION),
    Row("r4-optout-root-on-data-never-permits", _r4_untyped("OPTOUT", provision(extra={
        "data": [{"meaning": "instance", "reference": {"reference": "Task/t1"}}]})),
        query("TREAT", resource_type="Task"), D, Rule.CONSENT_ROOT),
]  # fmt: skip


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_consents_mean_what_they_say(row: Row) -> None:
    decision = evaluate([parse_consent(row.consent)], row.query)
    assert (decision.outcome, decision.rule) == (row.outcome, row.rule)


def _refused(data: dict[str, Any]) -> RejectedInputError:
    with pytest.raises(RejectedInputError) as caught:
        parse_consent(data)
    assert caught.value.code == "consent-unsupported"
    return caught.value


@pytest.mark.parametrize(
    ("consent", "element"),
    [
        pytest.param(
            _r4_untyped("IMPLIED", provision(actors=[ORG_A])),
            "Consent.policyRule",
            id="policy-rule-without-direction",
        ),
        pytest.param(
            _r4_untyped(None, provision(actors=[ORG_A])), "Consent.policyRule", id="no-base"
        ),
        pytest.param(
            r4_consent(
                "c",
                provision(
                    "deny",
                    sub=[
                        provision(
                            extra={"code": [{"coding": [{"code": "secret-code-9"}]}]},
                            sub=[provision(actors=[ORG_B])],
                        )
                    ],
                ),
            ),
            "Consent.provision.provision[0].code",
            id="r4-permit-on-code-holding-a-deny",
        ),
        pytest.param(
            _r4_untyped(
                "OPTOUT",
                provision(
                    extra={
                        "data": [{"meaning": "dependents", "reference": {"reference": "Task/z9"}}]
                    },
                    sub=[provision(actors=[ORG_B])],
                ),
            ),
            "Consent.provision.data",
            id="r4-optout-root-on-data-holding-a-deny",
        ),
        pytest.param(
            r5_consent(
                "c",
                "deny",
                [
                    provision(
                        r5=True,
                        extra={"expression": {"expression": "secret-code-9"}},
                        sub=[provision(actors=[ORG_B], r5=True)],
                    )
                ],
            ),
            "Consent.provision[0].expression",
            id="r5-permit-on-expression-holding-a-deny",
        ),
        pytest.param(
            r5_consent(
                "c",
                "deny",
                [
                    provision(
                        r5=True,
                        extra={"documentType": [{"code": "secret-code-9"}]},
                        sub=[provision(actors=[ORG_B], r5=True)],
                    )
                ],
            ),
            "Consent.provision[0].documentType",
            id="r5-permit-on-document-type-holding-a-deny",
        ),
    ],
)
def test_unevaluated_widening_elements_refuse_the_consent(
    consent: dict[str, Any], element: str
) -> None:
    refused = _refused(consent)
    assert refused.detail.startswith(element + ":")
    assert "secret-code-9" not in str(refused)
    assert "z9" not in str(refused)


def test_an_r4_untyped_root_with_conditions_is_read_as_the_exception_to_its_base() -> None:
    consent = parse_consent(_r4_untyped("OPTIN", provision(actors=[ORG_A], sub=[provision()])))
    root = consent.root
    assert root is not None
    assert (root.path, root.outcome) == ("Consent.policyRule", P)
    (exception,) = root.provisions
    assert (exception.path, exception.outcome) == ("Consent.provision", D)
    assert [p.outcome for p in exception.provisions] == [P]


def test_a_cda_shaped_r5_consent_is_accepted_and_its_unevaluated_permit_never_permits() -> None:
    cda = provision(
        r5=True,
        extra={
            "documentType": [{"system": "urn:ietf:bcp:13", "code": "application/hl7-cda+xml"}],
            "code": [{"coding": [{"system": "http://loinc.org", "code": "34133-9"}]}],
        },
    )
    consent = r5_consent("cda", "permit", [provision(actors=[ORG_A], r5=True, sub=[cda])])
    decision = evaluate([parse_consent(consent)], query("TREAT", ORG_A))
    assert (decision.outcome, decision.provision) == (D, "Consent.provision[0]")
