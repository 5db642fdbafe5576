"""Synthetic FHIR and HL7 v2 messages for the connector unit tests (made up, no real person)."""

from __future__ import annotations

from typing import Any

import orjson

SYNTH_FAMILY = "Synthfamilia"
SYNTH_GIVEN = "Zephyrine"
SYNTH_LOCAL_ID = "LOC-SYN-48151623"


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2.250.1.999.1.1", "value": SYNTH_LOCAL_ID}],
        "name": [{"family": SYNTH_FAMILY, "given": [SYNTH_GIVEN]}],
        "birthDate": "1950-04-02",
        **extra,
    }


def observation() -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 82.5, "unit": "kg"},
    }


def bundle(bundle_type: str = "transaction", identifier: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {
                "fullUrl": "urn:uuid:0b5c6d3e-1f2a-4b5c-8d9e-0a1b2c3d4e5f",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": observation(), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    if identifier is not None:
        out["identifier"] = {"system": "urn:synth:bundle", "value": identifier}
    return out


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def hl7(
    message_type: str = "ADT^A01", control_id: str = "SYN0001", facility: str = "SYNTH-HOSP"
) -> bytes:
    """A small synthetic HL7 v2.5 message with CR segment ends."""
    segments = [
        f"MSH|^~\\&|SYNTH-APP|{facility}|CAREMESH|TERRITORY|20240315103000+0100||"
        f"{message_type}|{control_id}|P|2.5",
        "EVN|A01|20240315103000+0100",
        f"PID|1||{SYNTH_LOCAL_ID}^^^SYNTH-HOSP^PI||{SYNTH_FAMILY}^{SYNTH_GIVEN}||19500402|F",
        "PV1|1|I|CARDIO^101^1",
    ]
    return ("\r".join(segments) + "\r").encode()
