"""Each anonymizer method on exact, hand-computed expected outputs."""

from __future__ import annotations

import base64
import copy
import random
from datetime import date, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from caremesh.errors import PseudonymisationError
from caremesh.pseudonym import Anonymizer, load_rules

from .helpers import fold_offset, hmac_hex, make

TODAY = date(2026, 1, 15)


def shifted(day: str, offset: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=offset)).isoformat()


def test_resource_scope_offset_matches_the_fold_by_hand() -> None:
    # "pat-1" + "k": bytes 112 97 116 45 49 107, folded with o = (o*131 + b) mod 101
    o = 0
    for b in (112, 97, 116, 45, 49, 107):
        o = (o * 131 + b) % 101
    assert fold_offset("pat-1", "k") == o - 50
    anonymizer = make([{"path": "Patient.birthDate", "method": "dateshift"}], dateShiftKey="k")
    out = anonymizer.apply({"resourceType": "Patient", "id": "pat-1", "birthDate": "1975-06-15"})
    assert out["birthDate"] == shifted("1975-06-15", o - 50)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-03-04", lambda o: shifted("2021-03-04", o)),
        ("2021-03-04T13:45:10+02:00", lambda o: shifted("2021-03-04", o) + "T00:00:00+02:00"),
        ("2021-03-04T13:45:10.123Z", lambda o: shifted("2021-03-04", o) + "T00:00:00.000Z"),
        ("2021-03", lambda o: "2021"),  # partial date: falls back to redact (year kept)
        ("2021", lambda o: "2021"),
        ("1920-01-01", lambda o: None),  # indicates an age over 89: redacted entirely
    ],
)
def test_dateshift(value: str, expected: Any) -> None:
    anonymizer = Anonymizer(
        load_rules({"fhirPathRules": [{"path": "Observation.effective", "method": "dateshift"}]}),
        parameters={"dateShiftKey": "key", "enablePartialDatesForRedact": True},
        today=TODAY,
    )
    out = anonymizer.apply({"resourceType": "Observation", "id": "o-9", "effectiveDateTime": value})
    assert out.get("effectiveDateTime") == expected(fold_offset("o-9", "key"))


def test_dateshift_uses_the_id_as_earlier_rules_left_it() -> None:
    rules = [
        {"path": "Resource.id", "method": "cryptoHash"},
        {"path": "Patient.birthDate", "method": "dateshift"},
    ]
    out = make(rules, cryptoHashKey="h", dateShiftKey="d").apply(
        {"resourceType": "Patient", "id": "p", "birthDate": "2000-01-10"}
    )
    assert out["birthDate"] == shifted("2000-01-10", fold_offset(hmac_hex("h", "p"), "d"))
    out = make(list(reversed(rules)), cryptoHashKey="h", dateShiftKey="d").apply(
        {"resourceType": "Patient", "id": "p", "birthDate": "2000-01-10"}
    )
    assert out["birthDate"] == shifted("2000-01-10", fold_offset("p", "d"))


def test_fixed_offset_overrides_the_key() -> None:
    anonymizer = make(
        [{"path": "Patient.birthDate", "method": "dateshift"}], dateShiftFixedOffsetInDays=-3
    )
    out = anonymizer.apply({"resourceType": "Patient", "id": "x", "birthDate": "2000-01-02"})
    assert out["birthDate"] == "1999-12-30"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/123", lambda h: f"Patient/{h('123')}"),
        ("#x", lambda h: f"#{h('x')}"),
        ("urn:uuid:u-1", lambda h: f"urn:uuid:{h('u-1')}"),
        (
            "https://fhir.example.org/Patient/123/_history/2",
            lambda h: f"https://fhir.example.org/Patient/{h('123')}/_history/2",
        ),
        ("not a reference", lambda h: h("not a reference")),
    ],
)
def test_cryptohash_reference_hashes_only_the_id(reference: str, expected: Any) -> None:
    anonymizer = make([{"path": "nodesByType('Reference').reference", "method": "cryptoHash"}])
    out = anonymizer.apply({"resourceType": "Observation", "subject": {"reference": reference}})
    assert out["subject"]["reference"] == expected(lambda v: hmac_hex("test-hash-key", v))


def test_cryptohash_plain_values_are_64_lowercase_hex() -> None:
    out = make([{"path": "Resource.id", "method": "cryptoHash"}]).apply(
        {"resourceType": "Patient", "id": "pat-1"}
    )
    assert out["id"] == hmac_hex("test-hash-key", "pat-1")
    assert len(out["id"]) == 64
    assert out["id"] == out["id"].lower()


def test_encrypt_round_trips() -> None:
    key = "0123456789abcdef0123456789abcdef"
    anonymizer = make(
        [{"path": "nodesByType('Address').city", "method": "encrypt"}], encryptKey=key
    )
    resource = {"resourceType": "Patient", "address": [{"city": "Villeurbanne"}]}
    first = anonymizer.apply(resource)["address"][0]["city"]
    second = anonymizer.apply(resource)["address"][0]["city"]
    assert first != second  # random IV
    raw = base64.b64decode(first)
    decryptor = Cipher(algorithms.AES(key.encode()), modes.CBC(raw[:16])).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(raw[16:]) + decryptor.finalize()) + unpadder.finalize()
    assert plain.decode() == "Villeurbanne"


@pytest.mark.parametrize(
    ("rule", "value", "low", "high"),
    [
        ({"span": 6, "rangeType": "fixed", "roundTo": 0}, 70, 67, 73),
        ({"span": 0.2, "rangeType": "proportional", "roundTo": 1}, 50.0, 45.0, 55.0),
    ],
)
def test_perturb_stays_within_half_span(
    rule: dict[str, Any], value: float, low: float, high: float
) -> None:
    rules = [{"path": "Observation.value as Quantity", "method": "perturb", **rule}]
    anonymizer = Anonymizer(load_rules({"fhirPathRules": rules}), rng=random.Random(7))
    seen = set()
    for _ in range(200):
        out = anonymizer.apply(
            {"resourceType": "Observation", "valueQuantity": {"value": value, "unit": "kg"}}
        )
        got = out["valueQuantity"]["value"]
        assert low <= got <= high
        assert out["valueQuantity"]["unit"] == "kg"
        seen.add(got)
    assert len(seen) > 3


def test_perturb_skips_values_of_other_types() -> None:
    rules = [{"path": "Observation.value as Quantity", "method": "perturb", "span": 10}]
    anonymizer = Anonymizer(load_rules({"fhirPathRules": rules}))
    out = anonymizer.apply({"resourceType": "Observation", "valueString": "70"})
    assert out["valueString"] == "70"


@pytest.mark.parametrize(
    ("params", "resource", "expected"),
    [
        ({}, {"birthDate": "1975-06-15"}, {}),
        ({"enablePartialDatesForRedact": True}, {"birthDate": "1975-06-15"}, {"birthDate": "1975"}),
        ({"enablePartialDatesForRedact": True}, {"birthDate": "1930-06-15"}, {}),
        ({}, {"address": [{"postalCode": "12345"}]}, {}),
        (
            {"enablePartialZipCodesForRedact": True},
            {"address": [{"postalCode": "12345"}]},
            {"address": [{"postalCode": "12300"}]},
        ),
        (
            {"enablePartialZipCodesForRedact": True, "restrictedZipCodeTabulationAreas": ["036"]},
            {"address": [{"postalCode": "03612-4567"}]},
            {"address": [{"postalCode": "00000-0000"}]},
        ),
    ],
)
def test_redact_partial_dates_and_zip_codes(
    params: dict[str, Any], resource: dict[str, Any], expected: dict[str, Any]
) -> None:
    rules = [{"path": "Patient.birthDate | nodesByName('postalCode')", "method": "redact"}]
    anonymizer = Anonymizer(load_rules({"fhirPathRules": rules}), parameters=params, today=TODAY)
    out = anonymizer.apply({"resourceType": "Patient", **resource})
    out.pop("meta")
    assert out == {"resourceType": "Patient", **expected}


@pytest.mark.parametrize(
    ("age", "partial", "kept"), [(45, True, 45), (90, True, None), (45, False, None)]
)
def test_redact_partial_ages(age: int, partial: bool, kept: int | None) -> None:
    rules = [{"path": "nodesByType('Age').value", "method": "redact"}]
    anonymizer = Anonymizer(
        load_rules({"fhirPathRules": rules}), parameters={"enablePartialAgesForRedact": partial}
    )
    out = anonymizer.apply({"resourceType": "Condition", "onsetAge": {"value": age, "unit": "a"}})
    assert out["onsetAge"].get("value") == kept


@pytest.mark.parametrize(
    ("replace_with", "expected"),
    [
        ("example city", {"city": "example city", "line": ["1 rue"]}),
        (None, {"line": ["1 rue"]}),
    ],
)
def test_substitute_primitive(replace_with: Any, expected: dict[str, Any]) -> None:
    rules = [
        {"path": "nodesByType('Address').city", "method": "substitute", "replaceWith": replace_with}
    ]
    out = make(rules).apply(
        {"resourceType": "Patient", "address": [{"city": "Lyon", "line": ["1 rue"]}]}
    )
    assert out["address"] == [expected]


def test_substitute_complex_keeps_what_earlier_rules_processed() -> None:
    rules = [
        {"path": "nodesByType('Address').country", "method": "keep"},
        {
            "path": "nodesByType('Address')",
            "method": "substitute",
            "replaceWith": {
                "use": "home",
                "city": "example city",
                "period": {"start": "2000-01-01"},
            },
        },
    ]
    resource = {
        "resourceType": "Patient",
        "address": [{"use": "work", "city": "Lyon", "line": ["1 rue"], "country": "FR"}],
    }
    out = make(rules).apply(resource)
    assert out["address"] == [
        {"use": "home", "city": "example city", "country": "FR", "period": {"start": "2000-01-01"}}
    ]
    assert [s["code"] for s in out["meta"]["security"]] == ["SUBSTITUTED"]


@pytest.mark.parametrize(
    ("value", "other", "expected"),
    [("75012", "redact", "75"), ("A1", "redact", None), ("A1", "keep", "A1")],
)
def test_generalize_cases(value: str, other: str, expected: str | None) -> None:
    rules = [
        {
            "path": "nodesByName('postalCode')",
            "method": "generalize",
            "cases": {"$this.startsWith('75')": "$this.substring(0, 2)"},
            "otherValues": other,
        }
    ]
    out = make(rules).apply(
        {"resourceType": "Patient", "address": [{"postalCode": value, "country": "FR"}]}
    )
    assert out["address"][0].get("postalCode") == expected


def test_generalize_dates_with_fhirpath_literals() -> None:
    rules = [
        {
            "path": "Patient.birthDate",
            "method": "generalize",
            "cases": {"$this >= @1970-01-01 and $this < @1980-01-01": "@1970"},
        }
    ]
    out = make(rules).apply({"resourceType": "Patient", "birthDate": "1975-06-15"})
    assert out["birthDate"] == "1970"


def test_security_labels_in_upstream_order_without_duplicates(patient: dict[str, Any]) -> None:
    patient["meta"] = {"security": [{"system": "x", "code": "REDACTED"}]}
    rules = [
        {"path": "Patient.gender", "method": "substitute", "replaceWith": "unknown"},
        {"path": "Patient.birthDate", "method": "dateshift"},
        {"path": "Resource.id", "method": "cryptoHash"},
        {"path": "nodesByType('HumanName')", "method": "redact"},
        {"path": "nodesByName('postalCode')", "method": "redact"},
        {"path": "nodesByType('Address').city", "method": "encrypt"},
        {"path": "Patient.telecom.value", "method": "generalize", "cases": {"true": "'x'"}},
    ]
    out = make(rules, enablePartialZipCodesForRedact=True, encryptKey="0123456789abcdef").apply(
        patient
    )
    codes = [s["code"] for s in out["meta"]["security"]]
    assert codes == [
        "REDACTED",  # pre-existing, not repeated
        "ABSTRED",
        "CRYTOHASH",
        "ENCRYPT",
        "PERTURBED",
        "SUBSTITUTED",
        "GENERALIZED",
    ]
    # as upstream's SecurityLabels: the last four carry no system
    systems = [s.get("system") for s in out["meta"]["security"][1:]]
    observation_value = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
    assert systems == [observation_value, observation_value, None, None, None, None]


def test_input_is_not_modified(patient: dict[str, Any]) -> None:
    before = copy.deepcopy(patient)
    make([{"path": "nodesByType('HumanName')", "method": "redact"}]).apply(patient)
    assert patient == before


def test_perturb_of_a_quantity_with_a_non_numeric_value_is_a_clean_rule_error() -> None:
    rules = [{"path": "Observation.value as Quantity", "method": "perturb", "span": 10}]
    bad = {"resourceType": "Observation", "valueQuantity": {"value": "seventy", "unit": "kg"}}
    with pytest.raises(PseudonymisationError) as caught:
        Anonymizer(load_rules({"fhirPathRules": rules})).apply(bad)
    assert "seventy" not in str(caught.value)
    skipped = Anonymizer(load_rules({"fhirPathRules": rules, "processingErrors": "skip"}))
    assert "valueQuantity" not in skipped.apply(bad)
