"""Consent evaluation: `evaluate(consents, query, policy) -> Decision`, a pure function.

The rules, in order (DESIGN §5):

1. A consent applies when its status is `active`, its period (R5 `Consent.period`, R4 root
   `provision.period`) contains `now`, it has no withdrawal effective at `now` for the query's
   purpose, and it speaks to the query: its root matches (a typed R4 root's constraints; the
   R5 root, and the R4 root standing for `policyRule` when the written root is its exception,
   have none) and the query's purpose is among what the consent declares it covers
   (`declared_purposes`): the root's purposes when it names some, else research purposes
   (HRESCH and below) for a consent declared as research (R4 `scope` research, R5 `category` or
   `regulatoryBasis` research), else every purpose. What the consent covers is never inferred
   from the purposes its exceptions name: a root deny without conditions denies every purpose,
   actor and data but its exceptions.
2. The most recent applicable consent wins (`recorded`, then the greatest id on a tie).
3. Within it, the deepest matching provision decides (nested exceptions override their parent);
   between matching siblings at the same depth, deny wins. A provision matches when every
   constraint it has matches: `period` contains `now`; an `actor` is the query actor (by
   reference or identifier; by role, see below); a `purpose` implies the query purpose in the
   v3 ActReason hierarchy; a `class`/`resourceType` is the query resource type; a
   `securityLabel` is among the query labels; `dataPeriod` contains the data date; an `action`
   is the query action or an equivalent (`ConsentPolicy.action_equivalents`: by default
   caremesh treats `access` and `disclose` alike, since releasing data to a recipient is both);
   a `data` reference (meaning `instance`) is the query resource, or (meaning `related`) the
   query resource or one of the references it makes.
   Fail closed: a deny provision matches a query that does not say what one of its constraints
   asks (no actor, no custodian, no resource type, no data date, no resource, no references for
   `related`), and a deny provision with constraints caremesh cannot evaluate (`code`, `data`
   meaning `dependents` or `authoredby`, `expression`, `documentType`) matches every query that
   its other constraints match; a permit whose constraint the query does not answer does not
   match. Actors are matched by role: recipient roles (PRCP, IRCP... or none) to the query
   actor, the custodian role (CST) to the query's custodian (who holds the data); each side a
   provision names must match. Any other role (author AUT...) speaks of the data's origin in a
   way no query says: a deny naming one is taken to match, a permit naming one never matches.
   A permit with a constraint caremesh cannot evaluate never matches (it can only deny more);
   the parser refuses one only when nested denies depend on it. A deny that matches only
   because the query does not say what one of its constraints asks, or because caremesh cannot
   evaluate one (an assumed match), decides: its nested permits are not reached, since they
   would release data the deny may not cover. Ignoring part of a consent therefore never
   permits more than the patient allowed.
4. Without an applicable consent the policy default for the purpose applies (the nearest
   ancestor with a default, else `ConsentPolicy.fallback`).
5. Withdrawal (DESIGN §5: "a withdrawal stops all future releases for that purpose"): a
   withdrawal effective at `now` (its `at` is not after `now`) that covers the query's purpose
   sets a barrier at its `at`. A withdrawal for a purpose covers that purpose and every purpose
   it subsumes (a withdrawn TREAT covers ETREAT); a withdrawal for all purposes covers what the
   consent declares it covers (`declared_purposes`; every purpose when it declares no limit).
   Behind a barrier only consents recorded after the latest barrier count (a re-consent); when
   none of them speaks to the query, the decision is deny with rule `withdrawn` and the
   withdrawn consent's id, whatever the default. A withdrawal is thus always restrictive:
   lifting an objection is done by recording a newer consent (or marking the objection
   inactive), not by withdrawing it.
6. Restricted data: when the query carries a label of `restricted_labels` or
   `sensitive_labels`, a permit stands only when it is explicit: the deciding provision is a
   permit provision that lists every such label of the query. Otherwise the decision is deny.
7. Erasure (GDPR Art. 17): when the consents hold the erasure marker (`model.ERASURE_ID`, left
   by the state fold), every query is denied with rule `erased`, whatever else is there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from caremesh.consent import purpose as pou
from caremesh.consent.model import (
    ERASURE_ID,
    ActorRef,
    Consent,
    ConsentStatus,
    DataMeaning,
    Outcome,
    Provision,
    ProvisionActor,
    Withdrawal,
)
from caremesh.envelope import PatientKey


class Rule(StrEnum):
    """What decided."""

    CONSENT_ROOT = "consent-root"
    CONSENT_PROVISION = "consent-provision"
    DEFAULT_POLICY = "default-policy"
    NO_ACTIVE_CONSENT = "no-active-consent"
    RESTRICTED = "restricted-needs-explicit-permit"
    WITHDRAWN = "withdrawn"
    ERASED = "erased"


def _default_defaults() -> dict[str, Outcome]:
    return {"TREAT": Outcome.PERMIT, "HRESCH": Outcome.DENY}


def _default_actions() -> dict[str, frozenset[str]]:
    both = frozenset({"access", "disclose"})
    return {"access": both, "disclose": both}


@dataclass(frozen=True)
class ConsentPolicy:
    """Defaults and restrictions; filled from settings by the caller.

    `defaults` maps a purpose code to the outcome without consent (TREAT opt-out: permit;
    HRESCH opt-in: deny); a purpose without its own entry takes its nearest ancestor's, else
    `fallback`. `restricted_labels` (confidentiality R, V) and `sensitive_labels` (sensitivity
    categories such as ETH, PSY, HIV, SDV) need an explicit permit.
    """

    defaults: Mapping[str, Outcome] = field(default_factory=_default_defaults)
    fallback: Outcome = Outcome.DENY
    restricted_labels: frozenset[str] = frozenset({"R", "V"})
    sensitive_labels: frozenset[str] = frozenset({"ETH", "PSY", "HIV", "SDV"})
    action_equivalents: Mapping[str, frozenset[str]] = field(default_factory=_default_actions)

    def default_for(self, purpose: str) -> Outcome:
        """The outcome without consent for `purpose`."""
        for code in pou.lineage(purpose):
            if code in self.defaults:
                return self.defaults[code]
        return self.fallback

    def actions_for(self, action: str) -> frozenset[str]:
        """The provision action codes that cover a query for `action`."""
        return self.action_equivalents.get(action, frozenset()) | {action}


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """May data of `patient` go to `actor` for `purpose`, now? Naive datetimes are read as UTC."""

    patient: PatientKey
    purpose: str
    now: datetime
    actor: ActorRef | None = None
    resource_type: str | None = None
    security_labels: frozenset[str] = frozenset()
    data_date: datetime | None = None
    action: str = "disclose"
    custodian: ActorRef | None = None
    """Who holds the data asked about (the source organisation), when the caller knows it."""
    resource: str | None = None
    """The data asked about as `Type/id`, when the caller knows it."""
    references: frozenset[str] | None = None
    """The references (`Type/id`) that resource makes; None when the caller does not say."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "now", _utc(self.now))
        if self.data_date is not None:
            object.__setattr__(self, "data_date", _utc(self.data_date))


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one query, with what decided it (a value, never an exception)."""

    outcome: Outcome
    rule: Rule
    purpose: str
    consent_ids: tuple[str, ...] = ()
    provision: str | None = None

    @property
    def permitted(self) -> bool:
        """True for permit."""
        return self.outcome is Outcome.PERMIT


RECIPIENT_ROLES = frozenset({None, "PRCP", "IRCP", "GRANTEE", "DELEGATEE"})
"""Actor roles that name who receives the data (v3 ParticipationType PRCP, IRCP...; or none).

The custodian role (CST) names who holds the data: it is matched to the query's custodian when
the query names one (a deny naming a custodian matches a query that does not; a permit does
not). Other roles (author AUT, informant INF...) speak of the data's origin in ways no query
says: a deny naming one matches every query, a permit naming one never matches."""


CUSTODIAN_ROLE = "CST"
"""v3 ParticipationType custodian: the actor holds the data (matched to the query's custodian)."""


Known = bool | None
"""One constraint against a query: it holds, it does not, or the query does not say (None)."""


def _all(results: Sequence[Known]) -> Known:
    if any(r is False for r in results):
        return False
    return None if any(r is None for r in results) else True


def _any(results: Sequence[Known]) -> Known:
    if any(r is True for r in results):
        return True
    return None if any(r is None for r in results) else False


def _side(actors: Sequence[ProvisionActor], who: ActorRef | None) -> Known:
    if not actors:
        return True
    if who is None:
        return None
    return any(a.who.matches(who) for a in actors)


def _actors_known(provision: Provision, query: DecisionQuery) -> Known:
    recipients = [a for a in provision.actors if a.role in RECIPIENT_ROLES]
    custodians = [a for a in provision.actors if a.role == CUSTODIAN_ROLE]
    others = len(provision.actors) - len(recipients) - len(custodians)
    other: Known = None if others else True
    return _all([_side(recipients, query.actor), _side(custodians, query.custodian), other])


def _classes_known(p: Provision, query: DecisionQuery) -> Known:
    if query.resource_type is None:
        return None
    if query.resource_type in p.classes:
        return True
    return None if any("|" in c for c in p.classes) else False


def _data_known(p: Provision, query: DecisionQuery) -> Known:
    if query.resource is None:
        return None
    found: list[Known] = []
    for item in p.data:
        if query.resource == item.reference:
            found.append(True)
        elif item.meaning is DataMeaning.RELATED:
            found.append(None if query.references is None else item.reference in query.references)
        else:
            found.append(False)
    return _any(found)


def _known(p: Provision, query: DecisionQuery, policy: ConsentPolicy) -> Known:
    """Whether every constraint of `p` holds for `query` (None: one the query does not say)."""
    return _all(
        [
            p.period is None or p.period.contains(query.now),
            not p.actors or _actors_known(p, query),
            not p.actions or bool(p.actions & policy.actions_for(query.action)),
            not p.purposes or any(pou.implies(g, query.purpose) for g in p.purposes),
            not p.classes or _classes_known(p, query),
            not p.security_labels or bool(p.security_labels & query.security_labels),
            p.data_period is None
            or (None if query.data_date is None else p.data_period.contains(query.data_date)),
            not p.data or _data_known(p, query),
            None if p.unsupported else True,
        ]
    )


class Match(StrEnum):
    """How a provision meets a query."""

    NO = "no"
    YES = "yes"
    ASSUMED = "assumed"
    """A deny taken to apply because the query does not say what one of its constraints asks,
    or caremesh cannot evaluate it: it decides, and its nested permits are not reached (they
    would release data the deny may not cover)."""


def match(p: Provision, query: DecisionQuery, policy: ConsentPolicy) -> Match:
    """How provision `p` meets `query` (fail closed: see rule 3 of the module)."""
    known = _known(p, query, policy)
    if known is True:
        return Match.YES
    if known is None and p.outcome is Outcome.DENY:
        return Match.ASSUMED
    return Match.NO


def matches(p: Provision, query: DecisionQuery, policy: ConsentPolicy) -> bool:
    """True when provision `p` applies to `query` (fail closed: see rule 3 of the module)."""
    return match(p, query, policy) is not Match.NO


def _deepest(
    p: Provision, query: DecisionQuery, policy: ConsentPolicy, depth: int
) -> tuple[int, Provision]:
    best: tuple[int, Provision] = (depth, p)
    for child in p.provisions:
        how = match(child, query, policy)
        if how is Match.NO:
            continue
        assumed = how is Match.ASSUMED
        found = (depth + 1, child) if assumed else _deepest(child, query, policy, depth + 1)
        deeper = found[0] > best[0]
        tie_deny = found[0] == best[0] and found[1].outcome is Outcome.DENY
        if deeper or (tie_deny and best[1].outcome is Outcome.PERMIT):
            best = found
    return best


RESEARCH_DECLARATIONS = frozenset({"research", "RESEARCH"})
"""Codes that declare a consent as research-only: consentscope `research` (R4 `scope`),
consent-category / v3-ActCode `research`/`RESEARCH` (R5 `category`, `regulatoryBasis`)."""


def declared_research(consent: Consent) -> bool:
    """True when the consent declares itself a research consent (scope, category, basis)."""
    declared = (consent.scope, *consent.categories, *consent.policy_rules)
    return any(
        code is not None and code.rpartition("|")[2] in RESEARCH_DECLARATIONS for code in declared
    )


def declared_purposes(consent: Consent) -> frozenset[str] | None:
    """The purposes a consent declares it covers; None for every purpose.

    The root's purposes when it names some; else HRESCH (with every purpose below it) for a
    consent declared as research; else every purpose. Never the purposes of its exceptions.
    """
    root = consent.root
    if root is not None and root.purposes:
        return root.purposes
    if declared_research(consent):
        return frozenset({"HRESCH"})
    return None


def named_purposes(consent: Consent) -> frozenset[str]:
    """The purposes a consent declares, for listings (empty: it covers every purpose)."""
    return declared_purposes(consent) or frozenset()


def covers(withdrawal: Withdrawal, consent: Consent, purpose: str) -> bool:
    """True when `withdrawal` of `consent` stops releases for `purpose` (with the hierarchy)."""
    if withdrawal.purpose is not None:
        return pou.implies(withdrawal.purpose, purpose)
    declared = declared_purposes(consent)
    return declared is None or any(pou.implies(code, purpose) for code in declared)


def _withdrawn(consent: Consent, query: DecisionQuery) -> bool:
    return any(
        w.at <= query.now and (w.purpose is None or pou.implies(w.purpose, query.purpose))
        for w in consent.withdrawals
    )


def _barrier(consents: Sequence[Consent], query: DecisionQuery) -> tuple[datetime, str] | None:
    """The latest effective withdrawal covering the query: (its time, the consent id)."""
    found = [
        (w.at, c.id)
        for c in consents
        for w in c.withdrawals
        if w.at <= query.now and covers(w, c, query.purpose)
    ]
    return max(found) if found else None


def _after(consent: Consent, moment: datetime) -> bool:
    return consent.recorded is not None and consent.recorded > moment


def _in_force(consent: Consent, query: DecisionQuery) -> bool:
    if consent.status is not ConsentStatus.ACTIVE or consent.root is None:
        return False
    if consent.period is not None and not consent.period.contains(query.now):
        return False
    return not _withdrawn(consent, query)


def _speaks_to(consent: Consent, query: DecisionQuery, policy: ConsentPolicy) -> bool:
    root = consent.root
    if root is None or not matches(root, query, policy):
        return False
    declared = declared_purposes(consent)
    return declared is None or any(pou.implies(code, query.purpose) for code in declared)


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _recency(consent: Consent) -> tuple[datetime, str]:
    return (consent.recorded or _EPOCH, consent.id)


def _restricted_check(
    decision: Decision, deciding: Provision | None, query: DecisionQuery, policy: ConsentPolicy
) -> Decision:
    if decision.outcome is Outcome.DENY:
        return decision
    needed = query.security_labels & (policy.restricted_labels | policy.sensitive_labels)
    if not needed:
        return decision
    explicit = (
        deciding is not None
        and deciding.outcome is Outcome.PERMIT
        and needed <= deciding.security_labels
    )
    if explicit:
        return decision
    return Decision(
        Outcome.DENY, Rule.RESTRICTED, query.purpose, decision.consent_ids, decision.provision
    )


def evaluate(
    consents: Sequence[Consent], query: DecisionQuery, policy: ConsentPolicy | None = None
) -> Decision:
    """Decide `query` against one patient's consents (see the module docstring for the rules)."""
    rules = policy if policy is not None else ConsentPolicy()
    if any(c.id == ERASURE_ID for c in consents):
        return Decision(Outcome.DENY, Rule.ERASED, query.purpose)
    barrier = _barrier(consents, query)
    if barrier is not None:
        consents = [c for c in consents if _after(c, barrier[0])]
    in_force = [c for c in consents if _in_force(c, query)]
    speaking = [(c, c.root) for c in in_force if c.root is not None and _speaks_to(c, query, rules)]
    if not speaking and barrier is not None:
        return Decision(Outcome.DENY, Rule.WITHDRAWN, query.purpose, (barrier[1],))
    if not speaking:
        rule = Rule.DEFAULT_POLICY if in_force else Rule.NO_ACTIVE_CONSENT
        default = Decision(rules.default_for(query.purpose), rule, query.purpose)
        return _restricted_check(default, None, query, rules)
    winner, root = max(speaking, key=lambda pair: _recency(pair[0]))
    if match(root, query, rules) is Match.ASSUMED:
        deciding = root
    else:
        _, deciding = _deepest(root, query, rules, 0)
    rule = Rule.CONSENT_ROOT if deciding is root else Rule.CONSENT_PROVISION
    decision = Decision(deciding.outcome, rule, query.purpose, (winner.id,), deciding.path)
    return _restricted_check(decision, deciding, query, rules)
