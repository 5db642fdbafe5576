"""Rule semantics: first match wins, typed selection, nested resources, releases, errors."""

from __future__ import annotations

from typing import Any

import pytest

from caremesh.errors import ConfigurationError, PseudonymisationError
from caremesh.pseudonym import Anonymizer, load_rules

from .helpers import hmac_hex, make


def test_first_match_wins_and_covers_the_subtree(patient: dict[str, Any]) -> None:
    keep_first = make(
        [
            {"path": "Patient.name.family", "method": "keep"},
            {"path": "Patient.name", "method": "redact"},
        ]
    ).apply(patient)
    assert keep_first["name"] == [{"family": "Martin"}]
    redact_first = make(
        [
            {"path": "Patient.name", "method": "redact"},
            {"path": "Patient.name.family", "method": "keep"},
        ]
    ).apply(patient)
    assert "name" not in redact_first


def test_same_rule_on_ancestor_and_descendant_counts_once() -> None:
    rules = [{"path": "nodesByType('Extension')", "method": "cryptoHash"}]
    resource = {
        "resourceType": "Patient",
        "extension": [{"url": "u", "extension": [{"url": "v", "valueString": "s"}]}],
    }
    out = make(rules).apply(resource)
    inner = out["extension"][0]["extension"][0]
    assert inner == {
        "url": hmac_hex("test-hash-key", "v"),
        "valueString": hmac_hex("test-hash-key", "s"),
    }


def test_nodes_by_type_reaches_nested_human_names(patient: dict[str, Any]) -> None:
    out = make([{"path": "nodesByType('HumanName')", "method": "redact"}]).apply(patient)
    assert "name" not in out
    assert "contact" not in out  # the contact held only a name, now empty, so it is pruned
    assert out["gender"] == "female"


def test_nodes_by_name_and_type_cast() -> None:
    rules = [
        {"path": "nodesByName('postalCode')", "method": "redact"},
        {"path": "Observation.value as Quantity", "method": "redact"},
    ]
    anonymizer = make(rules)
    obs = anonymizer.apply(
        {"resourceType": "Observation", "valueQuantity": {"value": 3, "unit": "kg"}}
    )
    assert "valueQuantity" not in obs
    obs = anonymizer.apply({"resourceType": "Observation", "valueString": "kept"})
    assert obs["valueString"] == "kept"


def test_where_predicate_selects_one_extension() -> None:
    rules = [{"path": "Patient.extension.where(url = 'http://ex.org/secret')", "method": "redact"}]
    resource = {
        "resourceType": "Patient",
        "extension": [
            {"url": "http://ex.org/secret", "valueString": "hidden"},
            {"url": "http://ex.org/open", "valueString": "shown"},
        ],
    }
    out = make(rules).apply(resource)
    assert out["extension"] == [{"url": "http://ex.org/open", "valueString": "shown"}]


def test_where_predicate_through_fhirpathpy() -> None:
    rules = [
        {
            "path": "nodesByType('ContactPoint').where(use = 'home' and system = 'phone')",
            "method": "redact",
        }
    ]
    resource = {
        "resourceType": "Patient",
        "telecom": [
            {"system": "phone", "use": "home", "value": "1"},
            {"system": "phone", "use": "work", "value": "2"},
        ],
    }
    out = make(rules).apply(resource)
    assert out["telecom"] == [{"system": "phone", "use": "work", "value": "2"}]


def test_primitive_extensions_follow_their_primitive() -> None:
    rules = [{"path": "Patient.birthDate", "method": "redact"}]
    resource = {
        "resourceType": "Patient",
        "birthDate": "1975-06-15",
        "_birthDate": {
            "extension": [{"url": "http://ex.org/t", "valueDateTime": "1975-06-15T10:00:00Z"}]
        },
        "name": [
            {"given": ["A", "B"], "_given": [None, {"extension": [{"url": "x", "valueCode": "c"}]}]}
        ],
    }
    out = make(rules).apply(resource)
    assert "birthDate" not in out
    assert "_birthDate" not in out
    assert out["name"][0]["_given"] == [None, {"extension": [{"url": "x", "valueCode": "c"}]}]


def test_bundle_entries_and_contained_resources(patient: dict[str, Any]) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "obs-1",
        "contained": [{"resourceType": "Practitioner", "id": "pr", "name": [{"family": "House"}]}],
        "performer": [{"reference": "#pr"}],
        "subject": {"reference": "Patient/pat-1"},
    }
    bundle = {
        "resourceType": "Bundle",
        "id": "b-1",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:e1", "resource": patient}, {"resource": observation}],
    }
    rules = [
        {"path": "Resource.id", "method": "cryptoHash"},
        {"path": "nodesByType('Reference').reference", "method": "cryptoHash"},
        {"path": "nodesByType('HumanName')", "method": "redact"},
    ]
    out = make(rules).apply(bundle)
    h = lambda v: hmac_hex("test-hash-key", v)  # noqa: E731
    pat, obs = out["entry"][0]["resource"], out["entry"][1]["resource"]
    assert out["id"] == h("b-1")
    assert pat["id"] == h("pat-1")
    assert obs["id"] == h("obs-1")
    assert "name" not in pat
    contained = obs["contained"][0]
    assert contained == {"resourceType": "Practitioner", "id": h("pr")}  # no labels of its own
    assert obs["performer"] == [{"reference": "#" + h("pr")}]
    assert obs["subject"] == {"reference": "Patient/" + h("pat-1")}
    codes = lambda r: [s["code"] for s in r["meta"]["security"]]  # noqa: E731
    assert codes(obs) == ["REDACTED", "CRYTOHASH"]  # REDACTED comes from its contained resource
    assert codes(pat) == ["REDACTED", "CRYTOHASH"]
    assert codes(out) == ["REDACTED", "CRYTOHASH"]
    assert out["entry"][0]["fullUrl"] == "urn:uuid:e1"


@pytest.mark.parametrize(
    ("version", "resource", "expected_keys"),
    [
        (
            "R4",
            {
                "resourceType": "MedicationRequest",
                "medicationCodeableConcept": {"text": "x"},
                "status": "active",
            },
            {"resourceType", "status", "meta"},
        ),
        (
            "R5",
            {
                "resourceType": "MedicationRequest",
                "medication": {"concept": {"text": "x"}},
                "status": "active",
            },
            {"resourceType", "status", "meta"},
        ),
        (
            "R4",
            {
                "resourceType": "MedicationRequest",
                "medication": {"concept": {"text": "x"}},
                "status": "active",
            },
            {"resourceType", "status", "meta"},  # R5 shape under R4 rules: the R5 model fills in
        ),
    ],
)
def test_r4_and_r5_element_types(
    version: str, resource: dict[str, Any], expected_keys: set[str]
) -> None:
    rules = [{"path": "nodesByType('CodeableConcept')", "method": "redact"}]
    out = make(rules, fhirVersion=version).apply(resource)
    assert set(out) == expected_keys


def test_processing_errors_raise_without_values(patient: dict[str, Any]) -> None:
    rules = [{"path": "nodesByType('date')", "method": "dateshift"}]
    patient["birthDate"] = "Martin-Alice"
    with pytest.raises(PseudonymisationError) as caught:
        make(rules).apply(patient)
    message = str(caught.value)
    assert "invalid-date" in message
    assert "Martin" not in message
    assert "Alice" not in message


def test_processing_errors_skip_returns_an_emptied_resource(patient: dict[str, Any]) -> None:
    rules = [{"path": "Patient.birthDate", "method": "dateshift"}]
    patient["birthDate"] = "not-a-date"
    out = make(rules, processingErrors="skip").apply(patient)
    assert out == {
        "resourceType": "Patient",
        "meta": {
            "security": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                    "code": "REDACTED",
                    "display": "redacted",
                }
            ]
        },
    }
    with pytest.raises(
        PseudonymisationError, match=r"invalid-date \(rule 0\) at Patient.birthDate"
    ):
        make(rules).apply(patient)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"fhirPathRules": [{"path": "Patient.name", "method": "scramble"}]}, "method must be"),
        (
            {"fhirPathRules": [{"path": "Patient.name.select(x)", "method": "redact"}]},
            "not supported",
        ),
        ({"fhirPathRules": [{"path": "Patient.name[", "method": "redact"}]}, "unexpected text"),
        (
            {"fhirPathRules": [{"path": "Patient.name", "method": "redact", "span": 1}]},
            "unknown keys",
        ),
        ({"fhirPathRules": [{"path": "Patient.name", "method": "perturb", "span": -1}]}, "span"),
        ({"fhirPathRules": [], "parameters": {"dateShiftKeys": "x"}}, "unknown keys"),
        ({"fhirPathRules": [], "parameters": {"dateShiftScope": "file"}}, "dateShiftScope"),
        ({"fhirPathRules": [], "fhirVersion": "Stu3"}, "fhirVersion"),
        ({"fhirPathRules": [], "processingErrors": "ignore"}, "processingErrors"),
        ({"fhirPathRules": {}}, "must be a list"),
        (
            {
                "fhirPathRules": [
                    {"path": "Patient.gender", "method": "generalize", "cases": {"(": "'x'"}}
                ]
            },
            "invalid FHIRPath",
        ),
    ],
)
def test_rule_files_are_validated_at_load(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):
        load_rules(config)


@pytest.mark.parametrize(
    ("rules", "parameters", "fragment"),
    [
        ([{"path": "Resource.id", "method": "cryptoHash"}], {}, "cryptoHashKey"),
        ([{"path": "Patient.birthDate", "method": "dateshift"}], {}, "dateShiftKey"),
        ([{"path": "Patient.name", "method": "encrypt"}], {"encryptKey": "short"}, "encryptKey"),
        ([{"path": "Patient.id", "method": "pseudonymize"}], {}, "vault"),
    ],
)
def test_missing_keys_fail_at_construction(
    rules: list[dict[str, Any]], parameters: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Anonymizer(load_rules({"fhirPathRules": rules}), parameters=parameters)


def test_rule_file_from_disk(tmp_path: Any) -> None:
    path = tmp_path / "rules.json"
    rule = '{"path": "Patient.name", "method": "REDACT"}'
    path.write_text('{"processingError": "skip", "fhirPathRules": [' + rule + "]}")
    ruleset = load_rules(path)
    assert ruleset.processing_errors == "skip"
    assert ruleset.rules[0].method == "redact"
    with pytest.raises(ConfigurationError, match="not found"):
        load_rules(tmp_path / "missing.json")
