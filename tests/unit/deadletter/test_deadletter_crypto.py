"""Dead-letter sealing (pure): the patient's data key opens it, nothing else does, and once the
vault record is tombstoned no key id resolves to anyone."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from caremesh.audit.events import view_audit_event
from caremesh.cli.deadletter import (
    DeadLetterError,
    parse_coordinates,
    parse_since,
)
from caremesh.cli.main import build_parser
from caremesh.envelope import KeyId, PatientKey
from caremesh.pseudonym.keys import vault_keys
from caremesh.pseudonym.vault import VaultIndex, record_data_key, seal_record
from caremesh.settings import Settings
from caremesh.tables import deadletters
from caremesh.tables.deadletters import Origin, data_key_id, open_dead_letter, seal_dead_letter
from tests.support.settings import evolve

PATIENT = PatientKey("2990175000031")
OTHER = PatientKey("2990175000032")
VALUE = b'{"resourceType":"Observation","note":[{"text":"SYN-CANARY-77"}]}'
ORIGIN = Origin("p.clinical.fhir.v1", 2, 41)
KID = KeyId("k1")
KEYS = {KID: vault_keys(os.urandom(32), KID)}


def test_sealed_value_opens_only_with_its_key_patient_and_coordinates() -> None:
    dek = os.urandom(32)
    blob = seal_dead_letter(dek, PATIENT, VALUE, ORIGIN)
    assert b"SYN-CANARY-77" not in blob
    assert PATIENT.encode() not in blob
    assert open_dead_letter(dek, PATIENT, blob, ORIGIN) == VALUE
    assert open_dead_letter(os.urandom(32), PATIENT, blob, ORIGIN) is None
    assert open_dead_letter(dek, OTHER, blob, ORIGIN) is None
    assert open_dead_letter(dek, PATIENT, blob, Origin(ORIGIN.topic, 2, 42)) is None
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    assert open_dead_letter(dek, PATIENT, tampered, ORIGIN) is None
    assert open_dead_letter(dek, PATIENT, b"short", ORIGIN) is None
    # a fresh nonce per dead letter
    assert seal_dead_letter(dek, PATIENT, VALUE, ORIGIN) != blob


def test_key_id_is_stable_per_data_key_and_reveals_nothing() -> None:
    dek = os.urandom(32)
    kid = data_key_id(dek)
    assert kid == data_key_id(dek)
    assert kid.startswith(deadletters.KEY_ID_PREFIX)
    assert len(kid) == len(deadletters.KEY_ID_PREFIX) + 32
    assert kid != data_key_id(os.urandom(32))
    assert dek.hex()[:32] not in kid


def test_record_data_key_keeps_the_key_of_a_resealed_record() -> None:
    dek = os.urandom(32)
    first = seal_record(KEYS[KID], PATIENT, {}, data_key=dek)
    assert record_data_key(KEYS, first) == dek
    again = seal_record(KEYS[KID], PATIENT, {"study-a": "ab" * 32}, data_key=dek)  # type: ignore[dict-item]
    assert record_data_key(KEYS, again) == dek
    other_master = {KID: vault_keys(os.urandom(32), KID)}
    assert record_data_key(other_master, first) is None
    assert record_data_key(KEYS, b"not json") is None


def test_find_patient_until_the_tombstone() -> None:
    deks = {PATIENT: os.urandom(32), OTHER: os.urandom(32)}
    index = VaultIndex(KEYS)
    for patient, dek in deks.items():
        index.apply(patient.encode(), seal_record(KEYS[KID], patient, {}, data_key=dek))
    assert deadletters.find_patient(index, KEYS, data_key_id(deks[PATIENT])) == (
        PATIENT,
        deks[PATIENT],
    )
    index.apply(PATIENT.encode(), None)  # erasure
    assert deadletters.find_patient(index, KEYS, data_key_id(deks[PATIENT])) is None
    assert deadletters.find_patient(index, KEYS, data_key_id(deks[OTHER])) == (OTHER, deks[OTHER])


def _never_called(*_: object) -> None:
    raise AssertionError("no key record may be written")


def _erased(_: PatientKey) -> bool:
    return True


def _not_erased(_: PatientKey) -> bool:
    return False


def test_protect_without_store_keeps_clear_and_erased_patient_keeps_nothing() -> None:
    clear = deadletters.protect(
        None, PATIENT, b"k", VALUE, ORIGIN, erased=_not_erased, write=_never_called
    )
    assert (clear.key, clear.value) == (b"k", VALUE)
    assert dict(clear.headers) == {deadletters.H_ENCRYPTION: deadletters.PLAINTEXT}
    store = deadletters.PatientKeyStore(Settings().kafka, "unused", KEYS, KID)
    dropped = deadletters.protect(
        store, PATIENT, PATIENT.encode(), VALUE, ORIGIN, erased=_erased, write=_never_called
    )
    assert (dropped.key, dropped.value) == (None, b"")
    assert dict(dropped.headers) == {deadletters.H_ENCRYPTION: deadletters.DROPPED_ERASED}


def test_coordinates_and_since_parsing() -> None:
    settings = Settings()
    settings = evolve(
        settings,
        kafka__topic_prefix="t1.",
    )
    assert str(parse_coordinates("deadletter.v1:2:17", settings.kafka)) == "t1.deadletter.v1:2:17"
    assert str(parse_coordinates("t1.deadletter.v1:0:3", settings.kafka)) == "t1.deadletter.v1:0:3"
    for bad in ("deadletter.v1:2", "deadletter.v1:x:1", "t1.audit.v1:0:1", "nothing"):
        with pytest.raises(DeadLetterError):
            parse_coordinates(bad, settings.kafka)
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_since("2d", now) == now - timedelta(days=2)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2026-01-01", now) == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(DeadLetterError):
        parse_since("yesterday", now)


def test_view_audit_event_names_operator_record_and_patient() -> None:
    settings = Settings()
    settings = evolve(
        settings,
        pseudonym__master_key=SecretStr("00" * 32),
    )
    where = parse_coordinates("deadletter.v1:1:5", settings.kafka)
    audit = view_audit_event(str(where), "olga", "ticket OPS-1", PATIENT, "a-1")
    assert (audit["resourceType"], audit["action"], audit["id"]) == ("AuditEvent", "R", "a-1")
    assert audit["agent"][0]["who"]["identifier"]["value"] == "olga"
    assert audit["entity"][0]["what"]["identifier"]["value"] == PATIENT
    assert audit["entity"][1]["what"]["identifier"]["value"] == "deadletter.v1:1:5"
    assert audit["subtype"][0]["code"] == "deadletter-view"


def test_key_store_fold_keeps_wrapped_keys_only_and_forgets_at_the_tombstone() -> None:
    store = deadletters.PatientKeyStore(Settings().kafka, "unused", KEYS, KID)
    dek = os.urandom(32)
    store._apply(PATIENT.encode(), seal_record(KEYS[KID], PATIENT, {}, data_key=dek))
    store._apply(OTHER.encode(), b"not a record")
    assert store.data_key(PATIENT) == dek
    assert store.has_record(OTHER)  # present: never replaced by a fresh key
    assert store.data_key(OTHER) is None
    assert dek not in repr(store).encode()
    assert not store.tombstoned(PATIENT)
    store._apply(PATIENT.encode(), None)
    assert store.data_key(PATIENT) is None
    assert not store.has_record(PATIENT)
    assert store.tombstoned(PATIENT)


def test_cli_parses_list_and_show() -> None:
    parser = build_parser()
    args = parser.parse_args(["deadletter", "list", "--stage", "share", "--since", "2h"])
    assert (args.command, args.action, args.stage, args.code, args.since) == (
        "deadletter",
        "list",
        "share",
        None,
        "2h",
    )
    args = parser.parse_args(["deadletter", "show", "deadletter.v1:0:1", "--reason", "r"])
    assert (args.coordinates, args.reason, args.operator) == ("deadletter.v1:0:1", "r", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["deadletter", "show", "deadletter.v1:0:1"])  # --reason is required
