"""What the consent API accepts, as plain functions: parameters, a posted Consent, summaries.

No HTTP here: `ConsentRequestError` carries an error code, a value-free detail (element paths,
parameter names) and the HTTP status the API answers it with. A posted Consent is validated with
fhir.resources (FHIR R4 through the R4B models, R5) and read by `parse_consent`; its patient key
is the INS (system urn:oid:1.2.250.1.213.1.4.8) of `Consent.patient` (R4) or `Consent.subject`
(R5), by identifier or `Patient?identifier=` reference, else the key the caller gives.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from caremesh.consent.evaluate import named_purposes
from caremesh.consent.model import ActorRef, Consent, FhirRelease
from caremesh.consent.parse import detect_release, parse_consent, parse_datetime
from caremesh.consent.purpose import is_purpose
from caremesh.envelope import PatientKey
from caremesh.errors import ConsentRequestError, InvalidFhirError
from caremesh.fhir.patient_key import resolve_reference
from caremesh.fhir.validate import release_from_content_type, validate_resource

PATIENT_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/\-]{0,199}")
FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
LABEL: Final = re.compile(r"[A-Za-z0-9_\-]{1,32}")
REFERENCE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class CheckedConsent:
    """A posted Consent ready for the ledger: its JSON (id and meta.lastUpdated set), model, key."""

    body: dict[str, Any]
    consent: Consent
    patient: PatientKey


def patient_param(value: str | None) -> PatientKey | None:
    """A `patient` parameter as a patient key (None when absent)."""
    if value is None:
        return None
    if not PATIENT_KEY.fullmatch(value):
        raise ConsentRequestError("invalid-patient", "patient: not a patient key", 400)
    return PatientKey(value)


def purpose_param(value: str | None, *, required: bool) -> str | None:
    """A `purpose` parameter: a v3 ActReason PurposeOfUse code."""
    if value is None:
        if required:
            raise ConsentRequestError("invalid-purpose", "purpose: required", 400)
        return None
    if not is_purpose(value):
        raise ConsentRequestError(
            "invalid-purpose", "purpose: not a v3 ActReason PurposeOfUse", 400
        )
    return value


def actor_param(value: str | None) -> ActorRef | None:
    """An `actor` parameter: `Type/id` as a reference, `system|value` as an identifier."""
    if value is None:
        return None
    if "|" in value:
        return ActorRef(identifier=value)
    return ActorRef(reference=value)


def resource_param(value: str | None) -> str | None:
    """A `resource` parameter: the data asked about, as `Type/id`."""
    if value is not None and not REFERENCE.fullmatch(value):
        raise ConsentRequestError("invalid-resource", "resource: not a Type/id reference", 400)
    return value


def references_param(value: str | None) -> frozenset[str] | None:
    """A `references` parameter: comma-separated `Type/id` the resource refers to.

    Absent: not said (a `related` deny then matches); present, even empty: these and no other.
    """
    if value is None:
        return None
    refs = frozenset(x for x in value.split(",") if x)
    if not all(REFERENCE.fullmatch(x) for x in refs):
        raise ConsentRequestError(
            "invalid-references", "references: not a list of Type/id references", 400
        )
    return refs


def date_param(value: str | None, name: str) -> datetime | None:
    """A FHIR date or dateTime parameter (its first instant, UTC)."""
    if value is None:
        return None
    try:
        return parse_datetime(value, name)[0]
    except InvalidFhirError:
        raise ConsentRequestError("invalid-date", f"{name}: not a FHIR date", 400) from None


def labels_param(value: str | None) -> frozenset[str]:
    """A `securityLabel` parameter: comma-separated codes."""
    labels = frozenset(x for x in (value or "").split(",") if x)
    if not all(LABEL.fullmatch(x) for x in labels):
        raise ConsentRequestError("invalid-label", "securityLabel: not a code list", 400)
    return labels


def consent_patient_key(body: Mapping[str, Any], release: FhirRelease) -> PatientKey | None:
    """The INS a Consent names its patient by (`patient` R4, `subject` R5), or None."""
    element = body.get("patient" if release is FhirRelease.R4 else "subject")
    found = resolve_reference(element, "consent-api", {})
    return found.key if found is not None and found.kind == "ins" else None


def consent_summary(consent: Consent) -> dict[str, Any]:
    """What `GET /Consent` lists of one consent (from the normalised ledger state)."""
    out: dict[str, Any] = {
        "id": consent.id,
        "release": consent.release.value,
        "status": consent.status.value,
        "decision": consent.root.outcome.value if consent.root is not None else None,
        "purposes": sorted(named_purposes(consent)),
    }
    if consent.recorded is not None:
        out["recorded"] = consent.recorded.isoformat()
    if consent.period is not None:
        out["period"] = {
            "start": consent.period.start.isoformat() if consent.period.start else None,
            "end": consent.period.end.isoformat() if consent.period.end else None,
        }
    out["withdrawals"] = [
        {"at": w.at.isoformat(), "purpose": w.purpose} for w in consent.withdrawals
    ]
    return out


def _release(body: Mapping[str, Any], content_type: str | None) -> FhirRelease:
    try:
        declared = release_from_content_type(content_type)
        if declared is None:
            return detect_release(body)
    except InvalidFhirError as exc:
        raise ConsentRequestError(exc.code, exc.detail, 422) from None
    return FhirRelease.R5 if declared == "R5" else FhirRelease.R4


def check_consent(
    body: Any,
    content_type: str | None,
    path_id: str | None,
    given: PatientKey | None,
    now: datetime | None = None,
    *,
    source: str | None = None,
    learned: Mapping[str, str] | None = None,
) -> CheckedConsent:
    """Validate a posted Consent, settle its id (the URL's, its own, else a new UUID), stamp
    `meta.lastUpdated` with `now`, and find its patient key: the INS it names, else `given`
    (an operator's `?patient=`), else, for a Consent posted by source system `source` that names
    its patient as `Patient/<id>`, the key that source's clinical records for that id get
    (`learned` INS mapping of the validate stage, else `<source>/Patient/<id>`)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Consent":
        raise ConsentRequestError("not-a-consent", "the body must be a FHIR Consent", 422)
    rel = _release(body, content_type)
    body_id = body.get("id")
    if path_id is not None and body_id is not None and body_id != path_id:
        raise ConsentRequestError("id-mismatch", "Consent.id differs from the URL id", 400)
    body = dict(body)
    body["id"] = path_id or body_id or str(uuid.uuid4())
    if not isinstance(body["id"], str) or not FHIR_ID.fullmatch(body["id"]):
        raise ConsentRequestError("invalid-id", "Consent.id is not a FHIR id", 422)
    meta = body.get("meta")
    stamp = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    body["meta"] = {**(meta if isinstance(meta, dict) else {}), "lastUpdated": stamp}
    try:
        validate_resource(body, rel.value)
        consent = parse_consent(body, rel)
    except InvalidFhirError as exc:
        raise ConsentRequestError(exc.code, exc.detail, 422) from None
    named = consent_patient_key(body, rel)
    if named is not None and given is not None and named != given:
        raise ConsentRequestError(
            "patient-mismatch", "?patient differs from the Consent's INS", 422
        )
    patient = named or given
    if patient is None and source is not None:
        element = body.get("patient" if rel is FhirRelease.R4 else "subject")
        found = resolve_reference(element, source, learned or {})
        patient = found.key if found is not None else None
    if patient is None:
        raise ConsentRequestError(
            "patient-key-required",
            "the Consent names neither an INS nor a Patient of the posting source: "
            "give ?patient=<patient key>",
            422,
        )
    return CheckedConsent(body, consent, patient)
