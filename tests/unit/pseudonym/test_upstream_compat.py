"""Upstream rule files run unchanged: BOM, path forms, labels, nested resources, Bundle fullUrls,
key modes and processing errors, each pinned on small inputs of our own."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from caremesh.cli.main import main
from caremesh.envelope import PatientKey
from caremesh.errors import PseudonymisationError
from caremesh.pseudonym import load_preset, load_rules, study_anonymizer
from tests.unit.pseudonym.helpers import fold_offset, hmac_hex, make

OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
MASTER = "cd" * 32


def _rule_file(tmp_path: Path, config: dict[str, Any], *, bom: bool = True) -> Path:
    path = tmp_path / "rules.json"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + orjson.dumps(config))
    return path


def test_a_rule_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = _rule_file(tmp_path, {"fhirPathRules": [{"path": "Patient.name", "method": "redact"}]})
    ruleset = load_rules(path)
    assert [rule.path for rule in ruleset.rules] == ["Patient.name"]


def test_paths_may_continue_after_nodes_by_type() -> None:
    anonymizer = make(
        [
            {"path": "Patient.nodesByType('HumanName').use", "method": "keep"},
            {"path": "nodesByType('Address').postalCode", "method": "keep"},
            {"path": "nodesByType('HumanName')", "method": "redact"},
            {"path": "nodesByType('Address')", "method": "redact"},
        ]
    )
    patient = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": "Quetzal"}],
        "contact": [{"name": {"use": "usual", "family": "Canari"}}],
        "address": [{"city": "Lyon", "postalCode": "69007"}],
    }
    out = anonymizer.apply(patient)
    assert out["name"] == [{"use": "official"}]
    assert out["contact"] == [{"name": {"use": "usual"}}]  # a descendant, not only a child
    assert out["address"] == [{"postalCode": "69007"}]


def test_redacting_a_whole_contained_resource_keeps_its_resource_type() -> None:
    anonymizer = make([{"path": "Resource", "method": "redact"}])
    patient = {
        "resourceType": "Patient",
        "id": "x",
        "contained": [{"resourceType": "Organization", "id": "o", "name": "Clinique"}],
    }
    out = anonymizer.apply(patient)
    assert out["contained"] == [{"resourceType": "Organization"}]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": patient}]}
    entry = make([{"path": "Resource", "method": "redact"}]).apply(bundle)["entry"][0]
    assert entry["resource"]["resourceType"] == "Patient"


def test_security_labels_are_upstreams_codes_and_systems() -> None:
    anonymizer = make(
        [
            {"path": "Patient.id", "method": "cryptoHash"},
            {"path": "Patient.birthDate", "method": "dateShift"},
            {"path": "Patient.gender", "method": "substitute", "replaceWith": "unknown"},
        ]
    )
    out = anonymizer.apply(
        {"resourceType": "Patient", "id": "a", "gender": "female", "birthDate": "2001-02-03"}
    )
    assert out["meta"]["security"] == [
        {
            "system": OBSERVATION_VALUE,
            "code": "CRYTOHASH",
            "display": "cryptographic hash function",
        },
        {"code": "PERTURBED", "display": "exact value is replaced with another exact value"},
        {"code": "SUBSTITUTED", "display": "exact value is replaced with a predefined value"},
    ]


def test_a_zoned_date_without_time_shifts_to_a_date() -> None:
    anonymizer = make([{"path": "nodesByType('dateTime')", "method": "dateShift"}])
    out = anonymizer.apply(
        {"resourceType": "Patient", "id": "p", "extension": [], "deceasedDateTime": "2001-01-01Z"}
    )
    shift = fold_offset("p", "test-shift-key")
    assert out["deceasedDateTime"] == (date(2001, 1, 1) + timedelta(days=shift)).isoformat()


BUNDLE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "fullUrl": "urn:uuid:8f0e2b9a-0c1d-4e57-9a55-3b1c0d2e4f60",
            "resource": {"resourceType": "Patient", "id": "8f0e2b9a-0c1d-4e57-9a55-3b1c0d2e4f60"},
        },
        {
            "fullUrl": "http://example.org/fhir/Observation/o1",
            "resource": {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:8f0e2b9a-0c1d-4e57-9a55-3b1c0d2e4f60"},
                "hasMember": [{"reference": "Observation/o1"}],
            },
        },
    ],
}


def test_full_urls_are_hashed_like_the_references_that_name_them() -> None:
    anonymizer = make(
        [
            {"path": "Resource.id", "method": "cryptoHash"},
            {"path": "nodesByType('Reference').reference", "method": "cryptoHash"},
            {"path": "Bundle.entry.fullUrl", "method": "cryptoHash"},
        ]
    )
    out = anonymizer.apply(BUNDLE)
    patient_url, observation_url = (e["fullUrl"] for e in out["entry"])
    observation = out["entry"][1]["resource"]
    uuid = "8f0e2b9a-0c1d-4e57-9a55-3b1c0d2e4f60"
    assert patient_url == f"urn:uuid:{hmac_hex('test-hash-key', uuid)}"
    assert observation["subject"]["reference"] == patient_url  # still resolves
    assert observation_url == f"http://example.org/fhir/Observation/{observation['id']}"
    assert observation["hasMember"][0]["reference"] == f"Observation/{observation['id']}"


def test_no_source_id_survives_a_bundle_under_gdpr_research() -> None:
    anonymizer = study_anonymizer("s1", bytes.fromhex(MASTER), load_preset("gdpr-research"))
    out = anonymizer.apply(BUNDLE, patient_key=PatientKey("offline:p"))
    text = orjson.dumps(out).decode()
    assert "8f0e2b9a" not in text
    assert "o1" not in text.replace("Observation", "")
    subject = out["entry"][1]["resource"]["subject"]["reference"]
    assert subject == out["entry"][0]["fullUrl"]


def _cli(tmp_path: Path, config: Path, *extra: str) -> tuple[int, Path]:
    source = tmp_path / "in.json"
    source.write_bytes(
        b"\xef\xbb\xbf" + orjson.dumps({"resourceType": "Patient", "id": "p", "gender": "male"})
    )
    out = tmp_path / "out.json"
    return main(
        ["pseudonymise", "--config", str(config), "--quiet", *extra, str(source), str(out)]
    ), out


def test_rule_file_keys_give_upstreams_hash_without_a_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAREMESH_PSEUDONYM__MASTER_KEY", raising=False)
    monkeypatch.delenv("CAREMESH_SECRETS_DIR", raising=False)
    config = {
        "fhirPathRules": [{"path": "Patient.id", "method": "cryptoHash"}],
        "parameters": {"cryptoHashKey": "file-key"},
    }
    code, out = _cli(tmp_path, _rule_file(tmp_path, config), "--keys", "rule-file")
    assert code == 0
    assert orjson.loads(out.read_bytes())["id"] == hmac_hex("file-key", "p")
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "file-key" not in err


def test_derived_keys_replace_the_files_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREMESH_PSEUDONYM__MASTER_KEY", MASTER)
    monkeypatch.delenv("CAREMESH_SECRETS_DIR", raising=False)
    config = {
        "fhirPathRules": [{"path": "Patient.id", "method": "cryptoHash"}],
        "parameters": {"cryptoHashKey": "file-key"},
    }
    code, out = _cli(tmp_path, _rule_file(tmp_path, config))
    assert code == 0
    hashed = orjson.loads(out.read_bytes())["id"]
    assert len(hashed) == 64
    assert hashed != hmac_hex("file-key", "p")


def test_rule_file_mode_without_keys_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {"fhirPathRules": [{"path": "Patient.id", "method": "cryptoHash"}]}
    code, out = _cli(tmp_path, _rule_file(tmp_path, config), "--keys", "rule-file")
    assert code == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cryptoHashKey" in err


def test_generalize_on_a_complex_node_applies_to_each_primitive_below_it() -> None:
    rule = {
        "path": "Patient.communication.language.coding",
        "method": "generalize",
        "cases": {"$this in ('fr-FR' | 'fr-BE')": "'fr'"},
        "otherValues": "keep",
    }
    coding = {"system": "urn:ietf:bcp:47", "code": "fr-BE"}
    patient = {"resourceType": "Patient", "communication": [{"language": {"coding": [coding]}}]}
    out = make([rule]).apply(patient)
    assert out["communication"][0]["language"]["coding"] == [
        {"system": "urn:ietf:bcp:47", "code": "fr"}
    ]


def test_a_rule_naming_an_unknown_resource_type_is_a_processing_error() -> None:
    rules = [
        {"path": "Patinet.name", "method": "redact"},
        {"path": "Patient.id", "method": "keep"},
    ]
    ruleset = load_rules({"fhirPathRules": rules})  # loads, as upstream's file does
    patient = {"resourceType": "Patient", "id": "p", "gender": "male"}
    with pytest.raises(PseudonymisationError, match="unknown-resource-type"):
        make(rules).apply(patient)
    skipped = make(rules, processingErrors="skip").apply(patient)
    assert skipped["resourceType"] == "Patient"
    assert set(skipped) == {"resourceType", "meta"}
    assert len(ruleset.rules) == 2


def test_an_input_type_or_element_its_release_does_not_define_is_a_processing_error() -> None:
    anonymizer = make([{"path": "nodesByType('HumanName')", "method": "redact"}])
    with pytest.raises(PseudonymisationError, match="unknown-resource-type"):
        anonymizer.apply({"resourceType": "DeviceComponent", "id": "d"})
    stu3_only = {"resourceType": "Patient", "animal": {"species": {"text": "x"}}}
    strict = make([{"path": "nodesByType('HumanName')", "method": "redact"}], fhirVersion="R4")
    with pytest.raises(PseudonymisationError, match="unknown-element"):
        strict.apply(stu3_only)
    assert anonymizer.apply(stu3_only)["animal"] == stu3_only["animal"]  # no release named


def test_a_single_object_where_fhir_has_a_list_is_written_as_a_list() -> None:
    anonymizer = make([{"path": "nodesByType('HumanName')", "method": "redact"}])
    patient = {"resourceType": "Patient", "communication": {"language": {"text": "fr"}}}
    out = anonymizer.apply(patient)
    assert out["communication"] == [{"language": {"text": "fr"}}]


def test_a_generalized_date_time_is_written_as_its_case_spells_it() -> None:
    rule = {
        "path": "nodesByType('dateTime')",
        "method": "generalize",
        "cases": {"$this >= @1990-01-01T00:00:00Z": "@2000-01-01T00:00:00Z"},
    }
    out = make([rule]).apply(
        {"resourceType": "Patient", "deceasedDateTime": "2017-01-01T01:01:01Z"}
    )
    assert out["deceasedDateTime"] == "2000-01-01T00:00:00Z"


def test_an_r4_only_resource_is_typed_from_the_r4_model() -> None:
    anonymizer = make(
        [
            {"path": "nodesByType('Identifier')", "method": "redact"},
            {"path": "nodesByType('dateTime')", "method": "dateShift"},
        ],
        fhirVersion="R4",
    )
    product = {
        "resourceType": "MedicinalProduct",  # R4 only: neither R4B nor R5 has it
        "id": "m",
        "identifier": [{"system": "urn:example:mpid", "value": "MP-1"}],
        "manufacturingBusinessOperation": [{"effectiveDate": "2013-03-15"}],
    }
    out = anonymizer.apply(product)
    assert "identifier" not in out
    shifted = date(2013, 3, 15) + timedelta(days=fold_offset("m", "test-shift-key"))
    assert out["manufacturingBusinessOperation"] == [{"effectiveDate": shifted.isoformat()}]


def test_transaction_urls_carry_no_source_id_under_gdpr_research() -> None:
    anonymizer = study_anonymizer("s1", bytes.fromhex(MASTER), load_preset("gdpr-research"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "http://example.org/fhir/Patient/pat-17",
                "resource": {"resourceType": "Patient", "id": "pat-17"},
                "request": {"method": "PUT", "url": "Patient/pat-17"},
            },
            {
                "fullUrl": "urn:uuid:5b1c0d2e-8f0e-4e57-9a55-2b9a0c1d4f60",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Patient/pat-17"},
                },
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": "identifier=urn:example|obs-991",
                },
            },
        ],
    }
    out = anonymizer.apply(bundle, patient_key=PatientKey("offline:pat-17"))
    text = orjson.dumps(out).decode()
    for source_id in ("pat-17", "5b1c0d2e", "obs-991"):
        assert source_id not in text
    patient_entry, observation_entry = out["entry"]
    pseudonym = patient_entry["resource"]["id"]
    assert patient_entry["request"]["url"] == f"Patient/{pseudonym}"
    assert patient_entry["fullUrl"] == f"http://example.org/fhir/Patient/{pseudonym}"
    assert observation_entry["resource"]["subject"]["reference"] == f"Patient/{pseudonym}"
    assert observation_entry["request"] == {"method": "POST", "url": "Observation"}
