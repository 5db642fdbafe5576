"""The benchmark corpus: synthetic Patient, Observation and Encounter resources of about 1 KB,
sent alone or in transaction Bundles of 20."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

INS = "urn:oid:1.2.250.1.213.1.4.8"


_BUNDLE_NS = uuid.UUID("6f0e1b2a-0000-4000-8000-00000000b5e1")


def _patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{i}",
        "meta": {"profile": ["http://interopsante.org/fhir/StructureDefinition/FrPatient"]},
        "identifier": [
            {"system": INS, "value": f"29901750{i:07d}"},
            {"system": "urn:oid:1.2.250.1.999.1.1", "value": f"LOC{i:08d}"},
        ],
        "active": True,
        "name": [
            {"use": "official", "family": f"Synthfamily{i % 97}", "given": ["Synthia", "Alix"]}
        ],
        "telecom": [{"system": "phone", "value": "+33 9 00 00 00 00", "use": "home"}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"19{40 + i % 50}-0{1 + i % 9}-1{i % 9}",
        "address": [
            {
                "use": "home",
                "line": [f"{i % 200} rue de la Synthese", "Batiment B"],
                "city": "Synthville",
                "postalCode": f"99{i % 1000:03d}",
                "country": "FRA",
            }
        ],
        "generalPractitioner": [
            {"reference": "Organization/gp-01", "display": "Cabinet synthetique"}
        ],
    }


def _observation(i: int, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{i}-{n}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "Vital Signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}],
            "text": "Body weight",
        },
        "subject": {
            "reference": f"Patient/p{i}",
            "identifier": {"system": INS, "value": f"29901750{i:07d}"},
        },
        "effectiveDateTime": f"2026-0{1 + n % 9}-1{n % 9}T0{n % 10}:30:00+01:00",
        "issued": f"2026-0{1 + n % 9}-1{n % 9}T0{n % 10}:45:00+01:00",
        "performer": [{"reference": "Organization/hosp-1"}],
        "valueQuantity": {
            "value": 70 + (n % 30) / 10,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "N",
                    }
                ]
            }
        ],
        "note": [{"text": "Measured at home with a connected scale."}],
    }


def _encounter(i: int, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": f"e{i}-{n}",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
        "type": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "32485007",
                        "display": "Hospital admission",
                    }
                ]
            }
        ],
        "subject": {
            "reference": f"Patient/p{i}",
            "identifier": {"system": INS, "value": f"29901750{i:07d}"},
        },
        "period": {"start": "2026-02-01T08:00:00+01:00", "end": "2026-02-05T12:00:00+01:00"},
        "reasonCode": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "84114007",
                        "display": "Heart failure",
                    }
                ]
            }
        ],
        "hospitalization": {
            "dischargeDisposition": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                        "code": "home",
                    }
                ]
            }
        },
        "serviceProvider": {"reference": "Organization/hosp-1"},
        "identifier": [{"system": "urn:oid:1.2.250.1.999.1.2", "value": f"VISIT{i:06d}{n:03d}"}],
    }


def resource(i: int, n: int) -> dict[str, Any]:
    """The n-th resource of patient i: Patient, Observation or Encounter."""
    kind = n % 3
    return _patient(i) if kind == 0 else _observation(i, n) if kind == 1 else _encounter(i, n)


def messages(singles: int, bundles: int, bundle_size: int = 20, seed: int = 7) -> list[bytes]:
    """`singles` single resources and `bundles` transaction Bundles, shuffled deterministically.

    Bundle entries carry `urn:uuid:` fullUrls and the Observations and Encounters of a Bundle
    reference its Patient entry by that fullUrl, as generators and EHR exports write them, so
    the validate stage's Bundle resolution is part of what is measured.
    """
    rng = random.Random(seed)
    out = [orjson.dumps(resource(rng.randrange(5000), n)) for n in range(singles)]
    for b in range(bundles):
        i = rng.randrange(5000)
        items = [resource(i, b * bundle_size + n) for n in range(bundle_size)]
        urls = [f"urn:uuid:{uuid.uuid5(_BUNDLE_NS, f'{seed}-{b}-{n}')}" for n in range(bundle_size)]
        patient_url = next(
            (
                url
                for url, item in zip(urls, items, strict=True)
                if item["resourceType"] == "Patient"
            ),
            None,
        )
        for item in items:
            if patient_url is not None and "subject" in item:
                item["subject"]["reference"] = patient_url
        entries = [
            {
                "fullUrl": url,
                "resource": item,
                "request": {"method": "POST", "url": item["resourceType"]},
            }
            for url, item in zip(urls, items, strict=True)
        ]
        out.append(
            orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        )
    rng.shuffle(out)
    return out


def resource_count(message: bytes) -> int:
    """How many clinical records one message becomes."""
    obj = orjson.loads(message)
    return len(obj["entry"]) if obj["resourceType"] == "Bundle" else 1
