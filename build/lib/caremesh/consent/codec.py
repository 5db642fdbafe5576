"""Compact JSON-able form of the consent model, for tables and caches (a caremesh format).

Not FHIR: the normalised `Consent` (with resolved outcomes, UTC instants, exclusive period ends)
as plain dicts, lists and strings, so that `consent_from_dict(consent_to_dict(c)) == c`. Keys
are short; empty fields are left out. Unreadable input raises `RejectedInputError` with code
`consent-state-invalid` and no values in its detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from caremesh.consent.model import (
    ActorRef,
    Consent,
    ConsentStatus,
    DataMeaning,
    DataRef,
    FhirRelease,
    Outcome,
    Period,
    Provision,
    ProvisionActor,
    Withdrawal,
)
from caremesh.errors import RejectedInputError

STATE_INVALID: Final = "consent-state-invalid"


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _period(period: Period | None) -> list[str | None] | None:
    return None if period is None else [_dt(period.start), _dt(period.end)]


def _actor(actor: ActorRef) -> dict[str, str]:
    out: dict[str, str] = {}
    if actor.reference is not None:
        out["r"] = actor.reference
    if actor.identifier is not None:
        out["i"] = actor.identifier
    return out


def _provision(p: Provision) -> dict[str, Any]:
    out: dict[str, Any] = {"o": p.outcome.value, "p": p.path}
    optional: dict[str, Any] = {
        "per": _period(p.period),
        "act": [{"role": a.role, **_actor(a.who)} for a in p.actors],
        "do": sorted(p.actions),
        "pou": sorted(p.purposes),
        "sec": sorted(p.security_labels),
        "cls": sorted(p.classes),
        "dp": _period(p.data_period),
        "dat": [[d.meaning.value, d.reference] for d in p.data],
        "uns": list(p.unsupported),
        "sub": [_provision(c) for c in p.provisions],
    }
    out.update({k: v for k, v in optional.items() if v})
    return out


def consent_to_dict(consent: Consent) -> dict[str, Any]:
    """The compact form of one consent."""
    out: dict[str, Any] = {
        "id": consent.id,
        "rel": consent.release.value,
        "st": consent.status.value,
        "pat": _actor(consent.patient),
    }
    optional: dict[str, Any] = {
        "rec": _dt(consent.recorded),
        "per": _period(consent.period),
        "root": _provision(consent.root) if consent.root is not None else None,
        "scope": consent.scope,
        "cat": list(consent.categories),
        "pol": list(consent.policy_rules),
        "wd": [[_dt(w.at), w.purpose] for w in consent.withdrawals],
    }
    out.update({k: v for k, v in optional.items() if v})
    return out


def _read_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _read_period(value: Any) -> Period | None:
    return None if value is None else Period(_read_dt(value[0]), _read_dt(value[1]))


def _read_actor(value: Mapping[str, Any]) -> ActorRef:
    return ActorRef(value.get("r"), value.get("i"))


def _read_provision(value: Mapping[str, Any]) -> Provision:
    return Provision(
        outcome=Outcome(value["o"]),
        path=str(value["p"]),
        period=_read_period(value.get("per")),
        actors=tuple(ProvisionActor(a.get("role"), _read_actor(a)) for a in value.get("act", [])),
        actions=frozenset(value.get("do", [])),
        purposes=frozenset(value.get("pou", [])),
        security_labels=frozenset(value.get("sec", [])),
        classes=frozenset(value.get("cls", [])),
        data_period=_read_period(value.get("dp")),
        data=tuple(DataRef(DataMeaning(m), str(r)) for m, r in value.get("dat", [])),
        unsupported=tuple(value.get("uns", [])),
        provisions=tuple(_read_provision(c) for c in value.get("sub", [])),
    )


def consent_from_dict(value: Mapping[str, Any]) -> Consent:
    """Read back the compact form written by `consent_to_dict`."""
    try:
        root = value.get("root")
        return Consent(
            id=str(value["id"]),
            release=FhirRelease(value["rel"]),
            status=ConsentStatus(value["st"]),
            patient=_read_actor(value["pat"]),
            recorded=_read_dt(value.get("rec")),
            period=_read_period(value.get("per")),
            root=_read_provision(root) if root is not None else None,
            scope=value.get("scope"),
            categories=tuple(value.get("cat", [])),
            policy_rules=tuple(value.get("pol", [])),
            withdrawals=tuple(_read_withdrawal(w) for w in value.get("wd", [])),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise RejectedInputError(STATE_INVALID, "consent: unreadable compact form") from None


def _read_withdrawal(value: Any) -> Withdrawal:
    at = _read_dt(value[0])
    if at is None:
        raise ValueError("withdrawal without time")
    return Withdrawal(at, value[1])


def withdrawal_to_list(withdrawal: Withdrawal) -> list[str | None]:
    """The compact form of one withdrawal."""
    return [_dt(withdrawal.at), withdrawal.purpose]


def withdrawal_from_list(value: Any) -> Withdrawal:
    """Read back `withdrawal_to_list`."""
    try:
        return _read_withdrawal(value)
    except (KeyError, TypeError, ValueError, IndexError):
        raise RejectedInputError(STATE_INVALID, "withdrawal: unreadable compact form") from None
