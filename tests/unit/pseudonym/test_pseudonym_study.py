"""Study keys, rotation, the vault, presets, and the properties users rely on."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caremesh.envelope import KeyId, PatientKey
from caremesh.errors import ConfigurationError, PseudonymisationError
from caremesh.pseudonym import (
    InMemoryVault,
    Keyring,
    derive_key,
    load_preset,
    preset_names,
    study_anonymizer,
)

MASTER = b"m" * 32
GDPR = load_preset("gdpr-research")
HIPAA = load_preset("hipaa-safe-harbor")
TODAY = date(2026, 1, 15)


def test_presets_are_listed_and_load() -> None:
    assert preset_names() == ["gdpr-research", "hipaa-safe-harbor"]
    assert GDPR.parameters.date_shift_scope == "patient"
    with pytest.raises(ConfigurationError, match="unknown rule preset"):
        load_preset("nope")


def test_derived_keys_differ_by_study_and_purpose() -> None:
    keys = {derive_key(MASTER, s, p) for s in ("a", "b") for p in ("cryptoHash", "dateShift")}
    assert len(keys) == 4
    assert derive_key(MASTER, "a", "cryptoHash") == derive_key(MASTER, "a", "cryptoHash")
    with pytest.raises(ConfigurationError):
        derive_key(b"short", "a", "cryptoHash")


def test_rotation_keeps_old_versions_and_reports_the_key_id(patient: dict[str, Any]) -> None:
    ring = Keyring.single(MASTER, KeyId("2025-01")).rotated(KeyId("2026-01"), b"n" * 32)
    current = study_anonymizer("s1", ring, HIPAA)
    old = study_anonymizer("s1", ring, HIPAA, key_id=KeyId("2025-01"))
    assert current.anonymize(patient).key_id == "2026-01"
    assert old.anonymize(patient).key_id == "2025-01"
    assert current.apply(patient)["id"] != old.apply(patient)["id"]
    assert (
        study_anonymizer("s1", Keyring.single(MASTER, KeyId("2025-01")), HIPAA).apply(patient)["id"]
        == old.apply(patient)["id"]
    )
    with pytest.raises(ConfigurationError, match="unknown key id"):
        study_anonymizer("s1", ring, HIPAA, key_id=KeyId("1999"))


def test_vault_pseudonyms_are_stable_and_reversible() -> None:
    vault = InMemoryVault(b"v" * 32)
    first = vault.pseudonym_for("s1", PatientKey("INS:1"))
    assert vault.pseudonym_for("s1", PatientKey("INS:1")) == first
    assert vault.pseudonym_for("s2", PatientKey("INS:1")) != first
    assert vault.patient_for("s1", first) == "INS:1"
    assert "INS" not in repr(vault)


def test_gdpr_pseudonymizes_the_patient_consistently(patient: dict[str, Any]) -> None:
    vault = InMemoryVault(b"v" * 32)
    anonymizer = study_anonymizer("s1", MASTER, GDPR, vault=vault, today=TODAY)
    result = anonymizer.anonymize(patient, patient_key="INS:290017512345678")
    pseudonym = vault.pseudonym_for("s1", PatientKey("INS:290017512345678"))
    out = result.resource
    assert result.pseudonym == pseudonym
    assert out["id"] == pseudonym
    assert out["identifier"] == [{"system": "urn:caremesh:study:s1:pseudonym", "value": pseudonym}]
    assert out["birthDate"] == "1975"
    assert out["address"] == [{"postalCode": "69"}]
    assert out["managingOrganization"] == {
        "reference": "Organization/" + out["managingOrganization"]["reference"].split("/")[1]
    }
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2024-03-05T10:11:12+01:00",
        "valueQuantity": {"value": 9.5, "unit": "%"},
        "note": [{"text": "Alice called back"}],
    }
    obs = anonymizer.apply(observation, patient_key="INS:290017512345678")
    assert obs["subject"] == {"reference": f"Patient/{pseudonym}"}
    assert obs["code"] == observation["code"]
    assert obs["valueQuantity"] == observation["valueQuantity"]
    assert "note" not in obs
    # one patient, one offset: both dates of the patient move by the same amount
    other = anonymizer.apply(
        {**observation, "id": "o2", "effectiveDateTime": "2024-03-06T08:00:00+01:00"},
        patient_key="INS:290017512345678",
    )
    assert obs["effectiveDateTime"][:10] < other["effectiveDateTime"][:10]
    with pytest.raises(PseudonymisationError, match="patient-key-missing"):
        anonymizer.apply(observation)


# -- properties ---------------------------------------------------------------------------

# Alphabets chosen so that a secret can never occur by chance in hex digests or label codes.
_word = st.text(alphabet="GHJKMNPQRSTVWXYZ", min_size=8, max_size=12)
_digits = st.text(alphabet="0123456789", min_size=10, max_size=15)


@st.composite
def synthetic_patient(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    family, given, city, street = draw(_word), draw(_word), draw(_word), draw(_word)
    phone, ins, ipp = "+33" + draw(_digits), "N" + draw(_digits), "IPP-" + draw(_digits)
    email = f"{given.lower()}@{family.lower()}.example"
    patient = {
        "resourceType": "Patient",
        "id": "pid-" + draw(st.text(alphabet="ghijk0123456789", min_size=6, max_size=20)),
        "identifier": [
            {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": ins},
            {"system": "urn:oid:1.2.250.1.71.4.2.7", "value": ipp, "type": {"text": "IPP"}},
        ],
        "name": [{"family": family, "given": [given], "text": f"{given} {family}"}],
        "telecom": [{"system": "phone", "value": phone}, {"system": "email", "value": email}],
        "gender": draw(st.sampled_from(["male", "female", "other", "unknown"])),
        "birthDate": draw(st.dates(date(1940, 1, 1), date(2020, 12, 31))).isoformat(),
        "address": [
            {"line": [f"12 rue {street}"], "city": city, "postalCode": "69003", "country": "FR"}
        ],
        "contact": [{"name": {"family": family + "X"}, "telecom": [{"value": phone + "9"}]}],
        "text": {"status": "generated", "div": f"<div>{given} {family}</div>"},
    }
    secrets = [family, given, city, street, phone, ins, ipp, email, patient["id"], family + "X"]
    return patient, secrets


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(synthetic_patient())
def test_no_identifier_survives_gdpr_research(case: tuple[dict[str, Any], list[str]]) -> None:
    patient, secrets = case
    anonymizer = study_anonymizer("s1", MASTER, GDPR, today=TODAY)
    text = json.dumps(anonymizer.apply(patient, patient_key="INS:" + secrets[5]))
    for secret in secrets:
        assert secret not in text
    assert patient["birthDate"] not in text


@settings(max_examples=40)
@given(synthetic_patient())
def test_deterministic_methods_are_deterministic(case: tuple[dict[str, Any], list[str]]) -> None:
    patient, _ = case
    first = study_anonymizer("s1", MASTER, GDPR, today=TODAY).apply(patient, patient_key="k")
    second = study_anonymizer("s1", MASTER, GDPR, today=TODAY).apply(patient, patient_key="k")
    assert first == second


@settings(max_examples=40)
@given(synthetic_patient())
def test_two_studies_cannot_link_a_patient(case: tuple[dict[str, Any], list[str]]) -> None:
    patient, secrets = case
    one = study_anonymizer("study-a", MASTER, GDPR, today=TODAY).apply(
        patient, patient_key=secrets[5]
    )
    two = study_anonymizer("study-b", MASTER, GDPR, today=TODAY).apply(
        patient, patient_key=secrets[5]
    )
    assert one["id"] != two["id"]
    assert one["identifier"][0]["value"] != two["identifier"][0]["value"]
    hip_a = study_anonymizer("study-a", MASTER, HIPAA).apply(patient)
    hip_b = study_anonymizer("study-b", MASTER, HIPAA).apply(patient)
    assert hip_a["id"] != hip_b["id"]  # cryptoHash keys differ per study
