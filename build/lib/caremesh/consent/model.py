"""The normalised consent model: one frozen shape for FHIR Consent R4 and R5, and consent events.

A `Consent` is a tree of `Provision`s. For R4 the root is `Consent.provision` when it has a
`type` or no condition but its `period` (its outcome the base: `type`, else `policyRule`); an
untyped root with conditions is, as R4 defines it, an exception to the base policy, so the
tree's root is then synthetic (path `Consent.policyRule`, the base outcome, no constraints) with
`Consent.provision` as its one exception. The root provision's `period` is the consent's
period. For R5 the root is synthetic: its outcome is
`Consent.decision`, it has no constraints, and its children are `Consent.provision[]`. Every
provision carries its resolved outcome: an R4 provision's own `type`, or the opposite of its
parent's outcome when `type` is absent (an exception); an R5 provision always the opposite of its
parent's (exceptions to the decision, nested exceptions flip again).

Codes are kept as plain strings: purposes are v3 ActReason codes, security labels their code,
classes a resource type (or `system|code` for other classes), actors a normalised reference
(`Organization/x`) and/or an identifier `system|value`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    """A rule's or a decision's effect."""

    PERMIT = "permit"
    DENY = "deny"

    def flipped(self) -> Outcome:
        """The opposite outcome (an exception's effect)."""
        return Outcome.DENY if self is Outcome.PERMIT else Outcome.PERMIT


class FhirRelease(StrEnum):
    """The FHIR release a Consent was written in."""

    R4 = "R4"
    R5 = "R5"


class ConsentStatus(StrEnum):
    """Consent.status, the union of R4 (consent-state-codes) and R5 (consent-state-codes)."""

    DRAFT = "draft"
    PROPOSED = "proposed"
    ACTIVE = "active"
    REJECTED = "rejected"
    INACTIVE = "inactive"
    NOT_DONE = "not-done"
    ENTERED_IN_ERROR = "entered-in-error"
    UNKNOWN = "unknown"


R4_STATUSES = frozenset(
    {
        ConsentStatus.DRAFT,
        ConsentStatus.PROPOSED,
        ConsentStatus.ACTIVE,
        ConsentStatus.REJECTED,
        ConsentStatus.INACTIVE,
        ConsentStatus.ENTERED_IN_ERROR,
    }
)
R5_STATUSES = frozenset(
    {
        ConsentStatus.DRAFT,
        ConsentStatus.ACTIVE,
        ConsentStatus.INACTIVE,
        ConsentStatus.NOT_DONE,
        ConsentStatus.ENTERED_IN_ERROR,
        ConsentStatus.UNKNOWN,
    }
)


@dataclass(frozen=True, slots=True)
class Period:
    """A time interval, `start` inclusive and `end` exclusive (None = open).

    A FHIR Period end is inclusive at its precision: `2024-12` ends before `2025-01-01`, so the
    parser stores one precision unit past the written end.
    """

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, when: datetime) -> bool:
        """True when `when` (timezone-aware) falls in the interval."""
        if self.start is not None and when < self.start:
            return False
        return not (self.end is not None and when >= self.end)


@dataclass(frozen=True, slots=True)
class ActorRef:
    """Who receives or uses data: a normalised reference and/or an identifier `system|value`."""

    reference: str | None = None
    identifier: str | None = None

    def matches(self, other: ActorRef) -> bool:
        """True when both name the same reference or the same identifier."""
        if self.reference is not None and self.reference == other.reference:
            return True
        return self.identifier is not None and self.identifier == other.identifier


@dataclass(frozen=True, slots=True)
class ProvisionActor:
    """One `provision.actor`: its role code (recorded, not matched) and who it is."""

    role: str | None
    who: ActorRef


class DataMeaning(StrEnum):
    """`provision.data.meaning` values caremesh evaluates (FHIR consent-data-meaning)."""

    INSTANCE = "instance"
    """The rule applies to that resource only."""
    RELATED = "related"
    """The rule applies to that resource and to the resources that refer to it."""


@dataclass(frozen=True, slots=True)
class DataRef:
    """One `provision.data`: a normalised reference (`Type/id`) and how it is read."""

    meaning: DataMeaning
    reference: str


@dataclass(frozen=True, slots=True)
class Provision:
    """One rule of a consent; each constraint that is present narrows what it matches.

    `data` holds the `provision.data` references caremesh evaluates (meaning `instance` or
    `related`); `unsupported` names constraints caremesh cannot evaluate (`code`, `data` with
    another meaning, `expression`, `documentType`); evaluation treats them conservatively.
    `path` is the element path of the provision in the original resource, a coordinate for
    decisions and audit.
    """

    outcome: Outcome
    path: str
    period: Period | None = None
    actors: tuple[ProvisionActor, ...] = ()
    actions: frozenset[str] = frozenset()
    purposes: frozenset[str] = frozenset()
    security_labels: frozenset[str] = frozenset()
    classes: frozenset[str] = frozenset()
    data_period: Period | None = None
    data: tuple[DataRef, ...] = ()
    unsupported: tuple[str, ...] = ()
    provisions: tuple[Provision, ...] = ()

    def walk(self) -> tuple[Provision, ...]:
        """This provision and every provision below it, depth first."""
        out: list[Provision] = [self]
        for child in self.provisions:
            out.extend(child.walk())
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """The consent stops applying from `at`, for `purpose` (and what it subsumes) or for all."""

    at: datetime
    purpose: str | None = None


@dataclass(frozen=True, slots=True)
class Consent:
    """One consent, normalised from R4 or R5 JSON.

    `root` is None only for consents that never apply (not active and written without rules).
    `withdrawals` are added by the consent state fold, never by the parser.
    """

    id: str
    release: FhirRelease
    status: ConsentStatus
    patient: ActorRef
    recorded: datetime | None
    period: Period | None
    root: Provision | None
    scope: str | None = None
    categories: tuple[str, ...] = ()
    policy_rules: tuple[str, ...] = ()
    withdrawals: tuple[Withdrawal, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsentUpserted:
    """A new consent, or a new version of one (same id replaces the earlier version)."""

    consent: Consent


@dataclass(frozen=True, slots=True)
class ConsentWithdrawn:
    """The patient withdrew consent `consent_id` at `at`, for one purpose or (None) for all."""

    consent_id: str
    at: datetime
    purpose: str | None = None


ConsentEvent = ConsentUpserted | ConsentWithdrawn
"""A consent change of the consent ledger (`consent.events.v1`): an upsert or a withdrawal."""


ERASURE_ID = "$erasure"
"""Id of the marker consent that stands for an erasure in a patient's state.

Not a valid FHIR id (`$` is outside `[A-Za-z0-9-.]`), so it never collides with a real consent.
"""


@dataclass(frozen=True, slots=True)
class PatientErased:
    """The patient's data was erased at `at` (GDPR Art. 17): no release for any purpose, ever."""

    at: datetime


LedgerEvent = ConsentUpserted | ConsentWithdrawn | PatientErased
"""One record of the consent ledger (`consent.events.v1`)."""


def erasure_marker(at: datetime) -> Consent:
    """The consent that an erasure leaves in the patient's state: deny everything, from `at`.

    Consent state is a tuple of `Consent`s everywhere it travels (ledger, tables, evaluation), so
    an erasure is carried as this one marker (id `ERASURE_ID`); `evaluate` answers deny with
    rule `erased` whenever it is present, and the state fold ignores every later event.
    """
    return Consent(
        id=ERASURE_ID,
        release=FhirRelease.R5,
        status=ConsentStatus.ACTIVE,
        patient=ActorRef(),
        recorded=at,
        period=None,
        root=Provision(outcome=Outcome.DENY, path="erasure"),
    )
