"""FHIR JSON rules: repeated keys, empty values, urn:oid values, Bundle size, at every level."""

from __future__ import annotations

import orjson
import pytest

from caremesh.fhir.ingest import process_ingest
from caremesh.fhir.json_rules import MAX_BUNDLE_ENTRIES

SRC = "synth-hosp"
OBS_HEAD = '{"resourceType":"Observation","code":{"text":"weight"},'
INS = "urn:oid:1.2.250.1.213.1.4.8"


def _bundle(*entries: str) -> bytes:
    return ('{"resourceType":"Bundle","type":"batch","entry":[' + ",".join(entries) + "]}").encode()


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        (OBS_HEAD + '"status":"final","status":"amended"}', "duplicate-key", "Observation.status"),
        (
            '{"resourceType":"Observation","status":"final","code":{"text":"a","text":"b"}}',
            "duplicate-key",
            "Observation.code.text",
        ),
        (
            '{"resourceType":"Patient","name":[{"family":"X","given":["A"],"family":"Y"}]}',
            "duplicate-key",
            "Patient.name[0].family",
        ),
        (
            '{"resourceType" : "Patient", "gender" : "male", "gender" : "female"}',
            "duplicate-key",
            "Patient.gender",
        ),
        (
            OBS_HEAD[:-1] + ',"note":[{"text":"a\\"\\u003a"}],"status":"final","status":"amended"}',
            "duplicate-key",
            "Observation.status",
        ),
        (
            _bundle(
                '{"resource":' + OBS_HEAD + '"status":"final","status":"amended"},'
                '"request":{"method":"POST","url":"Observation"}}'
            ),
            "duplicate-key",
            "Bundle.entry[0].resource.status",
        ),
        ('{"resourceType":"Patient","name":[]}', "empty-element", "Patient.name"),
        ('{"resourceType":"Patient","name":[{ }]}', "empty-element", "Patient.name[0]"),
        ('{"resourceType":"Patient","meta":{}}', "empty-element", "Patient.meta"),
        (
            '{"resourceType":"Patient","identifier":[{"system":"","value":"1"}]}',
            "empty-element",
            "Patient.identifier[0].system",
        ),
        (_bundle("{}", "{}"), "empty-element", "Bundle.entry[0]"),
        (
            '{"resourceType":"Patient","identifier":[{"system":"urn:oid:not-an-oid","value":"1"}]}',
            "invalid-oid",
            "Patient.identifier[0].system",
        ),
        (
            '{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.02.3","value":"1"}]}',
            "invalid-oid",
            "Patient.identifier[0].system",
        ),
        (
            '{"resourceType":"Patient","maritalStatus":{"coding":[{"system":"urn:oid:3.1",'
            '"code":"M"}]}}',
            "invalid-oid",
            "Patient.maritalStatus.coding[0].system",
        ),
        (
            _bundle(*["{}"] * (MAX_BUNDLE_ENTRIES + 1)),
            "too-many-entries",
            "Bundle.entry",
        ),
    ],
    ids=[
        "duplicate at the root",
        "duplicate nested",
        "duplicate in an array item",
        "duplicate with spaced colons",
        "duplicate hidden by an escaped colon",
        "duplicate in an entry",
        "empty array",
        "empty object in an array",
        "empty object",
        "empty string",
        "empty entries",
        "not an oid",
        "oid with a leading zero",
        "coding system",
        "too many entries",
    ],
)
def test_rule_breaks_are_refused_naming_the_element(
    body: str | bytes, code: str, where: str
) -> None:
    raw = body.encode() if isinstance(body, str) else body
    result = process_ingest(raw, SRC, "m1", None, {})
    assert result.rejection is not None
    assert result.rejection.code == code
    assert result.rejection.issues[0].expression == where
    for secret in ("amended", "not-an-oid", "1.02.3", "3.1"):
        assert secret not in result.rejection.detail


@pytest.mark.parametrize(
    "body",
    [
        OBS_HEAD + '"status":"final","note":[{"text":"a \\"status\\":\\"x\\" {} [] text"}]}',
        '{"resourceType":"Patient","identifier":[{"system":"' + INS + '","value":"1"}]}',
        '{"resourceType":"Patient","identifier":[{"system":"urn:oid:0.1","value":"1"}]}',
        '{\n  "resourceType": "Patient",\n  "gender": "male"\n}',
        '{"resourceType" : "Patient", "gender" : "male"}',
        '{"resourceType":"Patient","name":[{"family":"\\u00c9lise"}]}',
    ],
    ids=["braces and keys inside text", "INS", "short oid", "pretty", "spaced", "unicode escape"],
)
def test_valid_json_passes(body: str) -> None:
    result = process_ingest(body.encode(), SRC, "m1", None, {})
    assert result.rejection is None, result.rejection


def test_the_hostile_batch_of_100000_empty_entries_is_refused_before_validation() -> None:
    body = orjson.dumps({"resourceType": "Bundle", "type": "batch", "entry": [{}] * 100_000})
    result = process_ingest(body, SRC, "m1", None, {})
    assert result.rejection is not None
    assert result.rejection.code == "too-many-entries"
