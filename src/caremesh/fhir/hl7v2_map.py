"""Map HL7 v2.5 ADT^A01/A02/A03/A04/A08 and ORU^R01 to a FHIR R4 collection Bundle.

Segments follow HL7 v2.5 (PID and PV1 of chapter 3, OBR and OBX of chapter 7); the output is
FHIR R4 (4.0.1) JSON that also validates as R4B, shaped after the HL7 v2-to-FHIR IG mappings:

- Patient (from PID): identifiers from the PID-3 repetitions. A repetition is the INS (system
  `urn:oid:1.2.250.1.213.1.4.8`) when its assigning authority universal id (PID-3.4.2) is
  `1.2.250.1.213.1.4.8` or its identifier type code (PID-3.5) is `INS`, the French IHE PAM
  convention; other repetitions get `urn:oid:<PID-3.4.2>` when that is an OID. `Patient.id` is
  the first non-INS identifier value (when it is a valid FHIR id), so the source-scoped key
  matches the FHIR path. Name (PID-5), birthDate (PID-7), gender (PID-8), address (PID-11),
  deceased (PID-29/30).
- Encounter (from PV1): class from PV1-2 (v3 ActCode IMP/AMB/EMER/PRENC), status by event
  (A01/A02/A04 in-progress, A03 finished, A08 and ORU finished when PV1-45 is set), period from
  PV1-44/45, visit number PV1-19, discharge disposition PV1-36 (HL7 table 0112).
- Observation per OBX: code from OBX-3 (coding system `LN` → `http://loinc.org`), value by OBX-2
  (NM → valueQuantity with the OBX-6 unit, UCUM when OBX-6.3 is `UCUM`, or empty and OBX-6.1 is
  a UCUM unit, else the unit as text only; ST/TX/FT → valueString; CE/CWE/CNE →
  valueCodeableConcept; DT/TS/DTM → valueDateTime; SN → quantity or string), status from OBX-11,
  effective from OBX-14 else OBR-7, interpretation from OBX-8.

`Bundle.identifier` is the MSH-10 control id, and every id is derived from message content
(PID-3, PV1-19, OBR filler/placer number with OBX-3/OBX-4), so replays give the same ids.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from typing import Any, Final

import orjson

from caremesh.errors import InvalidHl7Error
from caremesh.fhir.datatypes import is_ucum_unit
from caremesh.fhir.hl7v2 import (
    DEFAULT_ZONE,
    Hl7Message,
    Segment,
    Separators,
    check_supported,
    component_of,
    fhir_date,
    fhir_datetime,
    read_segments,
    summarise,
)
from caremesh.fhir.patient_key import INS_SYSTEM

INS_OID: Final = "1.2.250.1.213.1.4.8"
CONTROL_ID_SYSTEM: Final = "urn:caremesh:hl7v2:message-control-id"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_NAMESPACE: Final = uuid.UUID("0c7d3b52-6a3e-5f0b-8d7e-2f4a9e61c5b8")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_NUMBER = re.compile(r"\s*(<=|>=|<|>)?\s*([+-]?(?:\d{1,15}(?:\.\d{0,15})?|\.\d{1,15}))\s*")
_CODING_SYSTEMS: Final = {
    "LN": LOINC,
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "UCUM": UCUM,
    "I10": "http://hl7.org/fhir/sid/icd-10",
}
_GENDER: Final = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown"}
_NAME_USE: Final = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname"}
_ADDRESS_USE: Final = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old"}
_CLASS: Final = {"I": "IMP", "B": "IMP", "O": "AMB", "R": "AMB", "E": "EMER", "P": "PRENC"}
_CLASS_LABEL: Final = {
    "IMP": "inpatient encounter",
    "AMB": "ambulatory",
    "EMER": "emergency",
    "PRENC": "pre-admission",
}
_ENCOUNTER_STATUS: Final = {"A01": "in-progress", "A02": "in-progress", "A04": "in-progress"}
_OBS_STATUS: Final = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "I": "registered",
    "X": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
}
_INTERPRETATION: Final = frozenset({"L", "H", "LL", "HH", "N", "A", "AA"})


def hl7v2_to_fhir(raw: bytes, *, zone: str | None = DEFAULT_ZONE) -> bytes:
    """An accepted HL7 v2 message as FHIR R4 Bundle JSON bytes; raise InvalidHl7Error if not."""
    return orjson.dumps(map_hl7v2(raw, zone=zone))


def map_hl7v2(raw: bytes, *, zone: str | None = DEFAULT_ZONE) -> dict[str, Any]:
    """An accepted HL7 v2 message as a FHIR R4 collection Bundle (a dict)."""
    segments = read_segments(raw)
    summary = check_supported(summarise(segments[0]))
    pid = next((seg for seg in segments if seg.name == "PID"), None)
    if pid is None:
        raise InvalidHl7Error("missing-segment", f"{summary.message_type} without a PID segment")
    patient = _patient(pid, summary, zone)
    subject = _reference(patient)
    resources = [patient]
    encounter_ref = None
    pv1 = next((seg for seg in segments if seg.name == "PV1"), None)
    if pv1 is not None:
        encounter = _encounter(pv1, summary, subject, zone)
        encounter_ref = {"reference": f"Encounter/{encounter['id']}"}
        resources.append(encounter)
    if summary.message_type == "ORU":
        resources.extend(_observations(segments, summary, subject, encounter_ref, zone))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": _uuid("bundle", summary.control_id),
        "identifier": {"system": CONTROL_ID_SYSTEM, "value": summary.control_id},
        "type": "collection",
    }
    stamp = fhir_datetime(segments[0].get(7), zone)
    if stamp is not None and "T" in stamp:
        bundle["timestamp"] = stamp
    bundle["entry"] = [
        {"fullUrl": f"urn:uuid:{_uuid(res['resourceType'], res['id'])}", "resource": res}
        for res in resources
    ]
    return bundle


def _patient(pid: Segment, summary: Hl7Message, zone: str | None) -> dict[str, Any]:
    """Patient from PID; its reference carries the INS as a logical identifier when known."""
    seps = pid.seps
    identifiers = []
    own_id = None
    for rep in pid.repetitions(3):
        value = component_of(rep, seps, 1)
        if not value:
            continue
        oid, type_code = component_of(rep, seps, 4, 2), component_of(rep, seps, 5)
        identifier: dict[str, Any] = {"value": value}
        if oid == INS_OID or type_code == "INS":
            identifier = {"use": "official", "system": INS_SYSTEM, "value": value}
        else:
            if _OID.fullmatch(oid):
                identifier["system"] = f"urn:oid:{oid}"
            if type_code:
                identifier["type"] = _concept(
                    "http://terminology.hl7.org/CodeSystem/v2-0203", type_code
                )
            if own_id is None:
                own_id = value if _FHIR_ID.fullmatch(value) else _uuid("patient", oid, value)
        identifiers.append(identifier)
    if own_id is None:
        seed = identifiers[0]["value"] if identifiers else summary.control_id
        own_id = _uuid("patient", seed)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": own_id}
    if identifiers:
        patient["identifier"] = identifiers
    names = [name for rep in pid.repetitions(5) if (name := _name(rep, seps))]
    if names:
        patient["name"] = names
    gender = _GENDER.get(pid.get(8))
    if gender:
        patient["gender"] = gender
    birth = fhir_date(pid.get(7))
    if birth:
        patient["birthDate"] = birth
    addresses = [addr for rep in pid.repetitions(11) if (addr := _address(rep, seps))]
    if addresses:
        patient["address"] = addresses
    death = fhir_datetime(pid.get(29), zone)
    if death:
        patient["deceasedDateTime"] = death
    elif pid.get(30) in ("Y", "N"):
        patient["deceasedBoolean"] = pid.get(30) == "Y"
    return patient


def _encounter(
    pv1: Segment, summary: Hl7Message, subject: dict[str, Any], zone: str | None
) -> dict[str, Any]:
    """Encounter from PV1 and the trigger event."""
    visit = pv1.get(19)
    own_id = visit if _FHIR_ID.fullmatch(visit) else _uuid("encounter", summary.control_id)
    code = _CLASS.get(pv1.get(2))
    if code is not None:
        klass = {"system": ACT_CODE, "code": code, "display": _CLASS_LABEL[code]}
    else:
        klass = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK"}
    start, end = fhir_datetime(pv1.get(44), zone), fhir_datetime(pv1.get(45), zone)
    event = summary.trigger_event
    if event == "A03" or (event not in _ENCOUNTER_STATUS and end is not None):
        status = "finished"
    elif event == "A08":
        status = "in-progress"
    else:
        status = _ENCOUNTER_STATUS.get(event, "unknown")
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": own_id,
        "status": status,
        "class": klass,
        "subject": subject,
    }
    if visit:
        identifier: dict[str, Any] = {"value": visit}
        oid = pv1.get(19, 4, 2)
        if _OID.fullmatch(oid):
            identifier["system"] = f"urn:oid:{oid}"
        encounter["identifier"] = [identifier]
    period = {key: value for key, value in (("start", start), ("end", end)) if value}
    if period:
        encounter["period"] = period
    disposition = pv1.get(36)
    if disposition:
        encounter["hospitalization"] = {
            "dischargeDisposition": _concept(
                "http://terminology.hl7.org/CodeSystem/v2-0112", disposition
            )
        }
    return encounter


def _observations(
    segments: list[Segment],
    summary: Hl7Message,
    subject: dict[str, Any],
    encounter: dict[str, Any] | None,
    zone: str | None,
) -> list[dict[str, Any]]:
    """One Observation per OBX, under the OBR that precedes it."""
    out = []
    seen: Counter[str] = Counter()
    obr: Segment | None = None
    for position, seg in enumerate(segments):
        if seg.name == "OBR":
            obr = seg
        if seg.name != "OBX":
            continue
        code = _codeable(seg.repetitions(3)[:1], seg.seps)
        if code is None:
            raise InvalidHl7Error("missing-field", f"OBX-3 is empty in segment {position + 1}")
        order = (obr.get(3) or obr.get(2)) if obr is not None else ""
        if order:
            natural = f"{order}|{seg.get(3)}|{seg.get(3, 3)}|{seg.get(4)}"
            seen[natural] += 1
            own_id = _uuid("observation", natural, str(seen[natural]))
        else:
            own_id = _uuid("observation", summary.control_id, str(position))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": own_id,
            "status": _OBS_STATUS.get(seg.get(11), "unknown"),
            "code": code,
            "subject": subject,
        }
        if encounter is not None:
            obs["encounter"] = encounter
        effective = fhir_datetime(seg.get(14), zone)
        if effective is None and obr is not None:
            effective = fhir_datetime(obr.get(7), zone)
        if effective:
            obs["effectiveDateTime"] = effective
        obs.update(_value(seg, zone))
        flag = seg.get(8)
        if flag in _INTERPRETATION:
            obs["interpretation"] = [
                _concept("http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", flag)
            ]
        out.append(obs)
    return out


def _value(obx: Segment, zone: str | None) -> dict[str, Any]:
    """The value[x] of an OBX by its value type (OBX-2); empty when OBX-5 is empty."""
    kind, seps = obx.get(2), obx.seps
    reps = obx.repetitions(5)
    if not reps or not any(reps):
        return {}
    first = component_of(reps[0], seps, 1)
    if kind in ("CE", "CWE", "CNE"):
        concept = _codeable(reps[:1], seps)
        return {"valueCodeableConcept": concept} if concept else {}
    if kind in ("NM", "SN"):
        text = first
        if kind == "SN" and not component_of(reps[0], seps, 3):
            text = first + component_of(reps[0], seps, 2)
        quantity = _quantity(text, obx)
        if quantity is not None:
            return {"valueQuantity": quantity}
    if kind == "DT" and fhir_date(first):
        return {"valueDateTime": fhir_date(first)}
    if kind in ("TS", "DTM") and fhir_datetime(first, zone):
        return {"valueDateTime": fhir_datetime(first, zone)}
    text = "\n".join(seps.component.join(_unescaped_components(rep, seps)) for rep in reps)
    return {"valueString": text.strip(seps.component)} if text.strip() else {}


def _quantity(text: str, obx: Segment) -> dict[str, Any] | None:
    """A FHIR Quantity from a number with optional comparator and the OBX-6 unit."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        return None
    comparator, number = match.groups()
    value: int | float = float(number) if "." in number else int(number)
    quantity: dict[str, Any] = {"value": value}
    if comparator:
        quantity["comparator"] = comparator
    unit_code, unit_text, unit_system = obx.get(6, 1), obx.get(6, 2), obx.get(6, 3)
    if unit_code or unit_text:
        quantity["unit"] = unit_text or unit_code
    if unit_code and (unit_system == "UCUM" or (not unit_system and is_ucum_unit(unit_code))):
        quantity["system"] = UCUM
        quantity["code"] = unit_code
    return quantity


def _codeable(reps: list[str], seps: Separators) -> dict[str, Any] | None:
    """A CodeableConcept from a CE/CWE (identifier, text, system, then the alternate triplet)."""
    if not reps:
        return None
    codings = []
    text = ""
    for start in (1, 4):
        code = component_of(reps[0], seps, start)
        display = component_of(reps[0], seps, start + 1)
        system = component_of(reps[0], seps, start + 2)
        text = text or display
        if code:
            coding: dict[str, Any] = {}
            if system in _CODING_SYSTEMS:
                coding["system"] = _CODING_SYSTEMS[system]
            coding["code"] = code
            if display:
                coding["display"] = display
            codings.append(coding)
    concept: dict[str, Any] = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept or None


def _name(rep: str, seps: Separators) -> dict[str, Any] | None:
    """A HumanName from an XPN repetition."""
    name: dict[str, Any] = {}
    use = _NAME_USE.get(component_of(rep, seps, 7))
    if use:
        name["use"] = use
    family = component_of(rep, seps, 1)
    if family:
        name["family"] = family
    given = [part for part in (component_of(rep, seps, 2), component_of(rep, seps, 3)) if part]
    if given:
        name["given"] = given
    for key, number in (("prefix", 5), ("suffix", 4)):
        if component_of(rep, seps, number):
            name[key] = [component_of(rep, seps, number)]
    return name if set(name) - {"use"} else None


def _address(rep: str, seps: Separators) -> dict[str, Any] | None:
    """An Address from an XAD repetition."""
    address: dict[str, Any] = {}
    use = _ADDRESS_USE.get(component_of(rep, seps, 7))
    if use:
        address["use"] = use
    lines = [part for part in (component_of(rep, seps, 1), component_of(rep, seps, 2)) if part]
    if lines:
        address["line"] = lines
    for key, number in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6)):
        if component_of(rep, seps, number):
            address[key] = component_of(rep, seps, number)
    return address if set(address) - {"use"} else None


def _reference(patient: dict[str, Any]) -> dict[str, Any]:
    """A reference to the Patient, with its INS as the logical identifier when it has one."""
    reference: dict[str, Any] = {"reference": f"Patient/{patient['id']}"}
    for identifier in patient.get("identifier", []):
        if identifier.get("system") == INS_SYSTEM:
            reference["identifier"] = {"system": INS_SYSTEM, "value": identifier["value"]}
            break
    return reference


def _concept(system: str, code: str) -> dict[str, Any]:
    """A CodeableConcept with one coding."""
    return {"coding": [{"system": system, "code": code}]}


def _unescaped_components(rep: str, seps: Separators) -> list[str]:
    """Every component of a repetition, unescaped."""
    count = rep.count(seps.component) + 1
    return [component_of(rep, seps, number) for number in range(1, count + 1)]


def _uuid(*parts: str) -> str:
    """A stable UUID from message content."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
