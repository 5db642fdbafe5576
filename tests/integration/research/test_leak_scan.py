"""Leak scan (issue 5 acceptance): synthetic patients with a canary in every identifying element
go through the live research stage under gdpr-research; nothing identifying comes out.

N patients (3 resources each) are sent; 200 by default so CI stays quick, the 2,000 of the
acceptance criterion with `CAREMESH_LEAK_SCAN_PATIENTS=2000`. Covered here: canaries (names,
identifiers, telecom, address, narrative, notes, Reference.display, contained resources,
extensions, resource ids, input headers) absent from the keys, headers and values of every
research topic and from the vault's values; no narrative or direct identifier in any record;
one pseudonym per patient within a study, none shared across studies; no pseudonym or hash in the
output is an unkeyed SHA-256 of a synthetic identifier. Withdrawal and erasure retractions are
covered by test_research_stage.py and ../erasure/test_erasure.py, and the vault's refusal after
erasure by ../erasure/test_reidentify.py; not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from caremesh import topics
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

pytestmark = pytest.mark.kafka

PATIENTS = int(os.environ.get("CAREMESH_LEAK_SCAN_PATIENTS", "200"))
INS = "urn:oid:1.2.250.1.213.1.4.8"
IPP = "urn:oid:1.2.250.1.999.1.1"
MARK = "QZX"
"""Every canary contains this; Q, Z and X are not hex digits, so no hash can contain it."""
STUDIES = [
    {"id": "study-a", "purpose": "HRESCH", "consent_default": "permit"},
    {"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"},
]
DIRECT = {"name", "telecom", "photo", "note", "contact", "line", "city", "district", "div"}
"""Elements that carry direct identifiers or free text and must not survive anywhere."""
ADDRESS_KEPT = {"use", "type", "state", "country", "postalCode"}


def canary(kind: str, i: int) -> str:
    return f"{MARK}{kind}{i:06d}"


def identifiers(i: int) -> list[str]:
    """Every synthetic identifier of patient i (for the unkeyed hash dictionary)."""
    return [
        canary("INS", i),
        canary("IPP", i),
        canary("PID", i),
        canary("OBS", i),
        canary("ENC", i),
        canary("VISIT", i),
    ]


def _ext(i: int, what: str) -> list[dict[str, Any]]:
    return [{"url": "http://example.org/fhir/ext/synthetic", "valueString": canary(what, i)}]


def patient(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": canary("PID", i),
        "text": {"status": "generated", "div": f"<div>{canary('NARR', i)}</div>"},
        "extension": _ext(i, "EXT"),
        "identifier": [
            {"system": INS, "value": canary("INS", i)},
            {"system": IPP, "value": canary("IPP", i), "assigner": {"display": canary("ASG", i)}},
        ],
        "name": [{"family": canary("FAM", i), "given": [canary("GIV", i)], "text": "x"}],
        "telecom": [
            {"system": "phone", "value": canary("TEL", i)},
            {"system": "email", "value": f"{canary('MAIL', i)}@example.org"},
        ],
        "gender": "female",
        "_gender": {"extension": _ext(i, "PEXT")},
        "birthDate": f"19{40 + i % 50}-0{1 + i % 9}-1{i % 9}",
        "address": [
            {
                "line": [canary("LINE", i)],
                "city": canary("CITY", i),
                "district": canary("DIST", i),
                "text": canary("ADDR", i),
                "postalCode": f"69{i % 1000:03d}",
                "country": "FRA",
            }
        ],
        "contact": [{"name": {"family": canary("KIN", i)}}],
        "generalPractitioner": [{"reference": "Practitioner/gp-1", "display": canary("GP", i)}],
    }


def observation(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": canary("OBS", i),
        "text": {"status": "generated", "div": f"<div>{canary('ONARR', i)}</div>"},
        "contained": [
            {
                "resourceType": "Practitioner",
                "id": "perf",
                "identifier": [
                    {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": canary("RPPS", i)}
                ],
                "name": [{"family": canary("DOC", i)}],
                "telecom": [{"system": "phone", "value": canary("DTEL", i)}],
            }
        ],
        "extension": _ext(i, "OEXT"),
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
        "subject": {"reference": f"Patient/{canary('PID', i)}", "display": canary("SDISP", i)},
        "performer": [{"reference": "#perf", "display": canary("PDISP", i)}],
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "valueQuantity": {
            "value": 70 + i % 30,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
        },
        "note": [{"text": f"seen with {canary('NOTE', i)}", "authorString": canary("AUTH", i)}],
    }


def encounter(i: int) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": canary("ENC", i),
        "identifier": [{"system": "urn:oid:1.2.250.1.999.1.2", "value": canary("VISIT", i)}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {
            "reference": f"Patient/{canary('PID', i)}",
            "identifier": {"system": INS, "value": canary("INS", i)},
            "display": canary("EDISP", i),
        },
        "period": {"start": "2026-02-01T08:00:00+01:00", "end": "2026-02-05T12:00:00+01:00"},
        "serviceProvider": {"reference": "Organization/hosp-1", "display": canary("ORG", i)},
    }


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (element name, value) pair of a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _records(ns: Namespace) -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for i in range(PATIENTS):
        key = canary("INS", i).encode()
        headers = [("ce_id", canary("CEID", i).encode()), ("caremesh-source", b"hosp")]
        for make in (patient, observation, encounter):
            out.append((key, orjson.dumps(make(i)), headers))
    return out


def test_no_identifier_leaks_into_research_topics(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    port = free_port()
    worker = spawn(
        "worker",
        ["worker", "--stage", "research"],
        namespace.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_STUDIES=json.dumps(STUDIES),
            CAREMESH_PSEUDONYM__MASTER_KEY=secrets.token_hex(32),
            CAREMESH_LOG_LEVEL="WARNING",
        ),
    )
    worker_ready(worker, port)
    namespace.produce(topics.CLINICAL_FHIR, [(k, v, list(h)) for k, v, h in _records(namespace)])
    expected = 3 * PATIENTS
    timeout = 60 + expected / 20
    keys_by_study: dict[str, set[bytes]] = {}
    for study in STUDIES:
        sid = study["id"]
        system = f"urn:caremesh:study:{sid}:pseudonym"
        msgs = namespace.consume(topics.research_topic(sid), expected, timeout=timeout)
        assert len(msgs) == expected, f"{sid}: {len(msgs)} of {expected} records"
        per_key: Counter[bytes] = Counter()
        for msg in msgs:
            key, value = msg.key(), msg.value()
            blob = key + value + repr(msg.headers()).encode()
            assert MARK.encode() not in blob.upper(), f"{sid}: canary in a record"
            assert re.fullmatch(rb"[0-9a-f]{64}", key)
            record = orjson.loads(value)
            pseudonym = key.decode()
            for name, element in _walk(record):
                assert name not in DIRECT, f"{sid}: {record['resourceType']} has {name}"
                if name == "identifier":
                    for ident in element if isinstance(element, list) else [element]:
                        assert ident == {"system": system, "value": pseudonym}
                if name == "birthDate":
                    assert len(element) == 4  # the year only
                if isinstance(element, dict) and "reference" in element:
                    assert set(element) == {"reference"}  # no display, no identifier
                if isinstance(element, dict) and "resourceType" in element:
                    assert "text" not in element  # no narrative in contained resources
                if name == "address":
                    assert all(set(a) <= ADDRESS_KEPT for a in element)
                if name == "postalCode":
                    assert len(element) == 2  # the département
            rtype = record["resourceType"]
            assert "text" not in record  # no narrative
            # one patient, one pseudonym: the key, the Patient id and every subject agree
            if rtype == "Patient":
                assert record["id"] == pseudonym
            else:
                assert record["subject"] == {"reference": f"Patient/{pseudonym}"}
            per_key[key] += 1
        assert len(per_key) == PATIENTS
        assert set(per_key.values()) == {3}
        keys_by_study[sid] = set(per_key)
    assert keys_by_study["study-a"].isdisjoint(keys_by_study["study-b"])

    # no pseudonym, hashed id or reference is an unkeyed SHA-256 of a synthetic identifier
    forms = (
        lambda v: v,
        lambda v: f"Patient/{v}",
        lambda v: v.lower(),
        lambda v: f"{INS}|{v}",
        lambda v: f"{INS}/{v}",
    )
    dictionary = {
        hashlib.sha256(form(ident).encode()).hexdigest()
        for i in range(PATIENTS)
        for ident in identifiers(i)
        for form in forms
    }
    found: set[str] = set()
    for study in STUDIES:
        for msg in namespace.consume_all(topics.research_topic(study["id"]), settle=2):
            found.add(msg.key().decode())
            found.update(m.decode() for m in re.findall(rb"[0-9a-f]{64}", msg.value()))
    assert len(found) > 2 * PATIENTS
    assert found.isdisjoint(dictionary)

    # the vault holds one sealed record per patient: keyed by the patient key, values opaque
    vault = namespace.consume(topics.KEYS_PATIENT, PATIENTS, timeout=timeout)
    assert len({m.key() for m in vault}) == PATIENTS
    for msg in vault:  # base64 may hold "QZX" by chance: look for whole canaries
        assert msg.key() not in msg.value()
        assert msg.key().replace(b"INS", b"PID") not in msg.value()
    assert namespace.consume_all(topics.DEADLETTER, settle=1) == []
