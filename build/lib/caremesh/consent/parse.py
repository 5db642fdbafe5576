"""Parse FHIR Consent R4 and R5 JSON (orjson-loaded dicts) and ledger events into the model.

Follows FHIR R4 (4.0.1) Consent, where `provision` is one root rule with nested exceptions, and
FHIR R5 (5.0.0) Consent, where `decision` is the root rule and `provision[]` its exceptions.
Bad input raises `InvalidFhirError` with code `consent-invalid` (not a Consent we can read) or
`consent-unsupported` (valid FHIR that caremesh cannot enforce), and ledger records that are
neither a Consent, a withdrawal nor an erasure raise code `consent-event-invalid`. Error details
name element paths only, never values.

Dates follow FHIR `date`/`dateTime`: partial dates start at their first instant and a Period end
covers its whole precision unit; a value without a timezone is read as UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from caremesh.consent import purpose
from caremesh.consent.model import (
    R4_STATUSES,
    R5_STATUSES,
    ActorRef,
    Consent,
    ConsentStatus,
    ConsentUpserted,
    ConsentWithdrawn,
    DataMeaning,
    DataRef,
    FhirRelease,
    LedgerEvent,
    Outcome,
    PatientErased,
    Period,
    Provision,
    ProvisionActor,
)
from caremesh.errors import InvalidFhirError

CONSENT_INVALID: Final = "consent-invalid"
CONSENT_UNSUPPORTED: Final = "consent-unsupported"
EVENT_INVALID: Final = "consent-event-invalid"

WITHDRAWAL_EVENT: Final = "consent-withdrawal"
"""`caremeshEvent` value of a withdrawal record on consent.events.v1 (a caremesh format)."""
ERASURE_EVENT: Final = "erasure"
"""`caremeshEvent` value of an erasure record (GDPR Art. 17) on consent.events.v1 (caremesh)."""

RESOURCE_TYPES_SYSTEMS: Final = frozenset(
    {"http://hl7.org/fhir/resource-types", "http://hl7.org/fhir/fhir-types"}
)
CONSENT_ACTION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentaction"

_DATETIME: Final = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_R4_ONLY: Final = ("patient", "scope", "dateTime", "policyRule", "policy", "organization")
_R5_ONLY: Final = ("decision", "subject", "date", "grantor", "grantee", "regulatoryBasis")
_R4_UNSUPPORTED: Final = ("code", "data")
ACT_CODE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
POLICY_RULE_BASES: Final = {
    "OPTIN": Outcome.PERMIT,
    "OPTINR": Outcome.PERMIT,
    "OPTOUT": Outcome.DENY,
    "OPTOUTE": Outcome.DENY,
    "NOCONSENT": Outcome.DENY,
}
"""v3-ActCode consent directives (R4 `Consent.policyRule`, value set consent-policy) whose base
direction is clear: opt-in (with or without restrictions) permits, opt-out (with or without
exceptions) and no-consent deny. Other codes (IMPLIED, EMRGONLY, INFA...) do not say it."""
POLICY_URI_BASES: Final[dict[str, Outcome]] = {}
"""`Consent.policy[].uri` values known to set a base decision (none is standard in R4 4.0.1)."""
_R5_UNSUPPORTED: Final = ("code", "data", "expression", "documentType")


def _fail(path: str, reason: str, code: str = CONSENT_INVALID) -> InvalidFhirError:
    return InvalidFhirError(code, f"{path}: {reason}")


def parse_datetime(text: object, path: str) -> tuple[datetime, datetime]:
    """A FHIR date/dateTime/instant as UTC (first instant, first instant after its precision)."""
    if not isinstance(text, str):
        raise _fail(path, "expected a date or dateTime string")
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise _fail(path, "not a FHIR date or dateTime")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        tz = UTC
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        start = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
        if month is None:
            end = start.replace(year=start.year + 1)
        elif day is None:
            end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        elif hour is None:
            end = start + timedelta(days=1)
        elif second is None:
            end = start + timedelta(minutes=1)
        elif fraction is None:
            end = start + timedelta(seconds=1)
        else:
            end = start + timedelta(microseconds=1)
        return start.astimezone(UTC), end.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _fail(path, "date out of range") from None


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, "expected an object")
    return value


def _items(obj: Mapping[str, Any], key: str, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise _fail(f"{path}.{key}", "expected an array")
    return [
        (f"{path}.{key}[{i}]", _mapping(item, f"{path}.{key}[{i}]")) for i, item in enumerate(value)
    ]


def _text(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{path}.{key}", "expected a non-empty string")
    return value.strip()


def _period(obj: Mapping[str, Any], key: str, path: str) -> Period | None:
    value = obj.get(key)
    if value is None:
        return None
    period = _mapping(value, f"{path}.{key}")
    start = period.get("start")
    end = period.get("end")
    first = parse_datetime(start, f"{path}.{key}.start")[0] if start is not None else None
    after = parse_datetime(end, f"{path}.{key}.end")[1] if end is not None else None
    if first is not None and after is not None and after <= first:
        raise _fail(f"{path}.{key}", "end before start")
    return Period(first, after)


def normalise_reference(reference: str) -> str:
    """`Type/id` of a literal reference: absolute URLs and `_history` versions are cut off."""
    ref = reference.strip().split("/_history/", 1)[0]
    if "://" in ref:
        parts = [p for p in ref.split("/") if p]
        if len(parts) >= 2:
            return f"{parts[-2]}/{parts[-1]}"
    return ref


def _reference(value: object, path: str) -> ActorRef:
    ref = _mapping(value, path)
    literal = _text(ref, "reference", path)
    identifier: str | None = None
    if ref.get("identifier") is not None:
        ident = _mapping(ref["identifier"], f"{path}.identifier")
        ident_value = _text(ident, "value", f"{path}.identifier")
        if ident_value is not None:
            system = _text(ident, "system", f"{path}.identifier") or ""
            identifier = f"{system}|{ident_value}"
    if literal is None and identifier is None:
        raise _fail(path, "needs a reference or an identifier value")
    return ActorRef(normalise_reference(literal) if literal else None, identifier)


def _coding_code(coding: Mapping[str, Any], path: str) -> tuple[str | None, str]:
    code = _text(coding, "code", path)
    if code is None:
        raise _fail(f"{path}.code", "required")
    return _text(coding, "system", path), code


def _purposes(obj: Mapping[str, Any], path: str) -> frozenset[str]:
    out: set[str] = set()
    for item_path, coding in _items(obj, "purpose", path):
        system, code = _coding_code(coding, item_path)
        if system not in (None, purpose.ACT_REASON_SYSTEM):
            raise _fail(f"{item_path}.system", "purpose must be v3 ActReason", CONSENT_UNSUPPORTED)
        out.add(code)
    return frozenset(out)


def _labels(obj: Mapping[str, Any], path: str) -> frozenset[str]:
    return frozenset(_coding_code(c, p)[1] for p, c in _items(obj, "securityLabel", path))


def _classes(obj: Mapping[str, Any], key: str, path: str) -> frozenset[str]:
    out: set[str] = set()
    for item_path, coding in _items(obj, key, path):
        system, code = _coding_code(coding, item_path)
        out.add(code if system in RESOURCE_TYPES_SYSTEMS or system is None else f"{system}|{code}")
    return frozenset(out)


def _actions(obj: Mapping[str, Any], path: str) -> frozenset[str]:
    out: set[str] = set()
    for item_path, concept in _items(obj, "action", path):
        for coding_path, coding in _items(concept, "coding", item_path):
            system, code = _coding_code(coding, coding_path)
            out.add(code if system in (None, CONSENT_ACTION_SYSTEM) else f"{system}|{code}")
    return frozenset(out)


def _actors(obj: Mapping[str, Any], path: str) -> tuple[ProvisionActor, ...]:
    out: list[ProvisionActor] = []
    for item_path, actor in _items(obj, "actor", path):
        role: str | None = None
        if actor.get("role") is not None:
            codings = _items(_mapping(actor["role"], f"{item_path}.role"), "coding", item_path)
            if codings:
                role = _coding_code(codings[0][1], codings[0][0])[1]
        if actor.get("reference") is None:
            raise _fail(f"{item_path}.reference", "required", CONSENT_UNSUPPORTED)
        out.append(ProvisionActor(role, _reference(actor["reference"], f"{item_path}.reference")))
    return tuple(out)


def _provision(
    obj: Mapping[str, Any], path: str, outcome: Outcome, release: FhirRelease
) -> Provision:
    unsupported_keys = _R4_UNSUPPORTED if release is FhirRelease.R4 else _R5_UNSUPPORTED
    classes = _classes(obj, "class" if release is FhirRelease.R4 else "resourceType", path)
    children: list[Provision] = []
    for child_path, child in _items(obj, "provision", path):
        children.append(
            _provision(
                child, child_path, _child_outcome(child, child_path, outcome, release), release
            )
        )
    data = _data(obj, path)
    unsupported = tuple(
        k
        for k in unsupported_keys
        if obj.get(k) not in (None, [], "") and not (k == "data" and data is not None)
    )
    if unsupported and outcome is Outcome.PERMIT and _holds_a_deny(children):
        # A permit caremesh cannot evaluate never matches (it can only deny more), but its
        # nested denies would then never be reached: ignoring it would permit more.
        raise _fail(
            f"{path}.{unsupported[0]}",
            "not evaluated by caremesh, and its nested deny provisions depend on it; ignoring "
            "it would permit more than the consent allows",
            CONSENT_UNSUPPORTED,
        )
    return Provision(
        outcome=outcome,
        path=path,
        period=_period(obj, "period", path),
        actors=_actors(obj, path),
        actions=_actions(obj, path),
        purposes=_purposes(obj, path),
        security_labels=_labels(obj, path),
        classes=classes,
        data_period=_period(obj, "dataPeriod", path),
        data=data or (),
        unsupported=unsupported,
        provisions=tuple(children),
    )


def _data(obj: Mapping[str, Any], path: str) -> tuple[DataRef, ...] | None:
    """`provision.data` when every item is evaluated (meaning instance or related with a literal
    reference); None when there is none or one caremesh does not evaluate (`dependents`,
    `authoredby`, a logical reference), which leaves `data` an unsupported constraint."""
    out: list[DataRef] = []
    for item_path, item in _items(obj, "data", path):
        meaning = _text(item, "meaning", item_path)
        if meaning is None:
            raise _fail(f"{item_path}.meaning", "required")
        if item.get("reference") is None:
            raise _fail(f"{item_path}.reference", "required")
        ref = _reference(item["reference"], f"{item_path}.reference")
        if meaning not in {m.value for m in DataMeaning} or ref.reference is None:
            return None
        out.append(DataRef(DataMeaning(meaning), ref.reference))
    return tuple(out) or None


def _holds_a_deny(provisions: Sequence[Provision]) -> bool:
    return any(q.outcome is Outcome.DENY for p in provisions for q in p.walk())


def _child_outcome(
    child: Mapping[str, Any], path: str, parent: Outcome, release: FhirRelease
) -> Outcome:
    if release is FhirRelease.R5:
        return parent.flipped()
    written = _text(child, "type", path)
    if written is None:
        return parent.flipped()
    return _outcome(written, f"{path}.type")


def _outcome(value: str, path: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:
        raise _fail(path, "must be permit or deny") from None


def detect_release(data: Mapping[str, Any]) -> FhirRelease:
    """R4 or R5 from the elements present (root `provision` object vs array, renamed elements)."""
    provision = data.get("provision")
    r4 = any(k in data for k in _R4_ONLY) or isinstance(provision, Mapping)
    r5 = any(k in data for k in _R5_ONLY) or isinstance(provision, list)
    if r4 == r5:
        raise _fail("Consent", "cannot tell R4 from R5")
    return FhirRelease.R4 if r4 else FhirRelease.R5


def parse_consent(data: object, release: FhirRelease | None = None) -> Consent:
    """One Consent resource (R4 or R5 JSON, detected when `release` is None) as a `Consent`."""
    obj = _mapping(data, "Consent")
    if obj.get("resourceType") != "Consent":
        raise _fail("Consent.resourceType", "must be Consent")
    rel = release or detect_release(obj)
    consent_id = _text(obj, "id", "Consent")
    if consent_id is None:
        raise _fail("Consent.id", "required")
    status_text = _text(obj, "status", "Consent")
    allowed = R4_STATUSES if rel is FhirRelease.R4 else R5_STATUSES
    try:
        status = ConsentStatus(status_text or "")
    except ValueError:
        raise _fail("Consent.status", "unknown status") from None
    if status not in allowed:
        raise _fail("Consent.status", f"not a {rel} status")
    if rel is FhirRelease.R4:
        return _parse_r4(obj, consent_id, status)
    return _parse_r5(obj, consent_id, status)


def _patient(obj: Mapping[str, Any], key: str) -> ActorRef:
    if obj.get(key) is None:
        raise _fail(f"Consent.{key}", "required")
    patient = _reference(obj[key], f"Consent.{key}")
    if patient.reference is not None and not patient.reference.startswith(
        ("Patient/", "Patient?", "#")
    ):
        raise _fail(f"Consent.{key}", "must be a Patient", CONSENT_UNSUPPORTED)
    return patient


def _recorded(obj: Mapping[str, Any], key: str) -> datetime | None:
    """`dateTime` (R4) / `date` (R5), refined by `meta.lastUpdated` when that falls inside it.

    An R5 `date` has day precision; the consent API stamps `meta.lastUpdated` with the instant
    it wrote the consent, so a consent recorded on the day of a withdrawal but after it can
    still be told apart. Without `dateTime`/`date`, `meta.lastUpdated` alone is used.
    """
    value = obj.get(key)
    written = None if value is None else parse_datetime(value, f"Consent.{key}")
    meta = obj.get("meta")
    updated_text = meta.get("lastUpdated") if isinstance(meta, Mapping) else None
    updated = (
        None if updated_text is None else parse_datetime(updated_text, "Consent.meta.lastUpdated")
    )
    if written is None:
        return None if updated is None else updated[0]
    if updated is not None and written[0] <= updated[0] < written[1]:
        return updated[0]
    return written[0]


def _concept_codes(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    out: list[str] = []
    for item_path, concept in _items(obj, key, "Consent"):
        for coding_path, coding in _items(concept, "coding", item_path):
            system, code = _coding_code(coding, coding_path)
            out.append(f"{system or ''}|{code}")
    return tuple(out)


def _r4_base(obj: Mapping[str, Any], root_obj: Mapping[str, Any]) -> Outcome | None:
    """The R4 base decision: the root's `type`, else `policyRule`, else a known `policy` URI."""
    written = _text(root_obj, "type", "Consent.provision")
    if written is not None:
        return _outcome(written, "Consent.provision.type")
    rule = obj.get("policyRule")
    if rule is not None:
        found: set[Outcome] = set()
        for code in _concept_codes({"policyRule": [rule]}, "policyRule"):
            system, _, value = code.rpartition("|")
            if system in ("", ACT_CODE_SYSTEM) and value in POLICY_RULE_BASES:
                found.add(POLICY_RULE_BASES[value])
        if len(found) == 1:
            return found.pop()
    for item_path, policy in _items(obj, "policy", "Consent"):
        uri = _text(policy, "uri", item_path)
        if uri is not None and uri in POLICY_URI_BASES:
            return POLICY_URI_BASES[uri]
    return None


_R4_CONDITIONS: Final = (
    "actor",
    "action",
    "securityLabel",
    "purpose",
    "class",
    "code",
    "dataPeriod",
    "data",
)
"""R4 provision elements that narrow what a rule applies to (`period` says when it holds)."""


def _r4_root(obj: Mapping[str, Any], root_obj: Mapping[str, Any]) -> Provision | None:
    """The R4 rule tree: a typed root as written; an untyped root as an exception to the base.

    FHIR R4 defines `Consent.provision` as "an exception to the base policy of this consent"
    and `provision.type` as "not permitted in root rule": when the root has no `type`, the base
    (`policyRule`) holds everywhere and the root, where it has conditions, is its exception
    (the opposite outcome, within those conditions), its nested provisions exceptions to that.
    A root with no condition but a period cannot be an exception (it would negate the base
    outright); it is the base itself, for that period.
    """
    base = _r4_base(obj, root_obj)
    if base is None:
        return None
    if _text(root_obj, "type", "Consent.provision") is not None:
        return _provision(root_obj, "Consent.provision", base, FhirRelease.R4)
    if not any(root_obj.get(k) not in (None, [], "") for k in _R4_CONDITIONS):
        return _provision(root_obj, "Consent.provision", base, FhirRelease.R4)
    exception = _provision(root_obj, "Consent.provision", base.flipped(), FhirRelease.R4)
    return Provision(
        outcome=base,
        path="Consent.policyRule",
        period=exception.period,
        provisions=(exception,),
    )


def _parse_r4(obj: Mapping[str, Any], consent_id: str, status: ConsentStatus) -> Consent:
    root: Provision | None = None
    raw = obj.get("provision")
    if raw is not None:
        root_obj = _mapping(raw, "Consent.provision")
        root = _r4_root(obj, root_obj)
        if root is None and status is ConsentStatus.ACTIVE:
            raise _fail(
                "Consent.policyRule",
                "the base decision is undetermined: give Consent.provision.type or a "
                "Consent.policyRule with a direction (v3-ActCode OPTIN, OPTOUT...)",
                CONSENT_UNSUPPORTED,
            )
    if root is None and status is ConsentStatus.ACTIVE:
        raise _fail("Consent.provision", "required for an active consent", CONSENT_UNSUPPORTED)
    scope_codes = _concept_codes({"scope": [obj["scope"]]} if "scope" in obj else {}, "scope")
    policy_rule = obj.get("policyRule")
    return Consent(
        id=consent_id,
        release=FhirRelease.R4,
        status=status,
        patient=_patient(obj, "patient"),
        recorded=_recorded(obj, "dateTime"),
        period=root.period if root is not None else None,
        root=root,
        scope=scope_codes[0] if scope_codes else None,
        categories=_concept_codes(obj, "category"),
        policy_rules=_concept_codes({"p": [policy_rule]} if policy_rule else {}, "p"),
    )


def _parse_r5(obj: Mapping[str, Any], consent_id: str, status: ConsentStatus) -> Consent:
    decision = _text(obj, "decision", "Consent")
    root: Provision | None = None
    if decision is not None:
        outcome = _outcome(decision, "Consent.decision")
        children = tuple(
            _provision(p, path, outcome.flipped(), FhirRelease.R5)
            for path, p in _items(obj, "provision", "Consent")
        )
        root = Provision(outcome=outcome, path="Consent.decision", provisions=children)
    elif status is ConsentStatus.ACTIVE:
        raise _fail("Consent.decision", "required for an active consent", CONSENT_UNSUPPORTED)
    return Consent(
        id=consent_id,
        release=FhirRelease.R5,
        status=status,
        patient=_patient(obj, "subject"),
        recorded=_recorded(obj, "date"),
        period=_period(obj, "period", "Consent"),
        root=root,
        categories=_concept_codes(obj, "category"),
        policy_rules=_concept_codes(obj, "regulatoryBasis"),
    )


def parse_event(data: object) -> LedgerEvent:
    """One consent.events.v1 record: a Consent (upsert), a caremesh withdrawal or erasure object.

    An erasure is `{"caremeshEvent": "erasure", "at": <dateTime>}`; the record key names the
    patient, the body carries no identifier.
    """
    if isinstance(data, Mapping) and data.get("resourceType") == "Consent":
        return ConsentUpserted(parse_consent(data))
    if isinstance(data, Mapping) and data.get("caremeshEvent") == ERASURE_EVENT:
        try:
            return PatientErased(parse_datetime(data.get("at"), "erasure.at")[0])
        except InvalidFhirError as exc:
            raise InvalidFhirError(EVENT_INVALID, exc.detail) from None
    if not isinstance(data, Mapping) or data.get("caremeshEvent") != WITHDRAWAL_EVENT:
        raise InvalidFhirError(EVENT_INVALID, "record: neither a Consent nor a withdrawal")
    consent_id = data.get("consentId")
    if not isinstance(consent_id, str) or not consent_id:
        raise InvalidFhirError(EVENT_INVALID, "withdrawal.consentId: required")
    code = data.get("purpose")
    if code is not None and (not isinstance(code, str) or not purpose.is_purpose(code)):
        raise InvalidFhirError(EVENT_INVALID, "withdrawal.purpose: not a PurposeOfUse code")
    try:
        at = parse_datetime(data.get("at"), "withdrawal.at")[0]
    except InvalidFhirError as exc:
        raise InvalidFhirError(EVENT_INVALID, exc.detail) from None
    return ConsentWithdrawn(consent_id, at, code)


def withdrawal_json(event: ConsentWithdrawn) -> dict[str, Any]:
    """The consent.events.v1 record of a withdrawal (the inverse of `parse_event`)."""
    out: dict[str, Any] = {
        "caremeshEvent": WITHDRAWAL_EVENT,
        "consentId": event.consent_id,
        "at": event.at.isoformat(),
    }
    if event.purpose is not None:
        out["purpose"] = event.purpose
    return out


def erasure_json(event: PatientErased) -> dict[str, Any]:
    """The consent.events.v1 record of an erasure (the inverse of `parse_event`)."""
    return {"caremeshEvent": ERASURE_EVENT, "at": event.at.isoformat()}
