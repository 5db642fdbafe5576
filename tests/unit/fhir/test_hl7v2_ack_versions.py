"""HL7 v2: a message that can never become FHIR is refused, and the ACK's ERR follows MSH-12."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from caremesh.connectors.mllp import ack_code_for
from caremesh.errors import InvalidHl7Error
from caremesh.fhir.hl7v2 import build_ack, parse_hl7

NOW = datetime(2024, 3, 18, 9, 0, 0, tzinfo=UTC)


def message(version: str, *segments: str, kind: str = "ADT^A01") -> bytes:
    msh = f"MSH|^~\\&|SYNTH-ADT|SYNTH-HOSP|CAREMESH|TERRITORY|20240318085959||{kind}|C1|P|{version}"
    return "\r".join([msh, *segments]).encode() + b"\r"


PID = "PID|1||7001^^^SYNTH-HOSP^PI||SYNTH^ALICE"


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        (message("2.5", "EVN|A01|20240318", PID, "PV1|1|I"), True),
        (message("2.5", "EVN|A01|20240318", "PV1|1|I"), False),
        (message("2.3", "EVN|A01|20240318"), False),
        (message("2.5", "OBR|1", "OBX|1|NM|29463-7^Weight^LN||82", kind="ORU^R01"), False),
        (message("2.5", PID, "OBR|1", kind="ORU^R01"), True),
    ],
    ids=["adt with pid", "adt without pid", "v2.3 adt without pid", "oru without pid", "oru"],
)
def test_a_message_without_a_patient_is_refused_with_ar(raw: bytes, accepted: bool) -> None:
    if accepted:
        assert parse_hl7(raw).control_id == "C1"
        return
    with pytest.raises(InvalidHl7Error) as caught:
        parse_hl7(raw)
    assert caught.value.code == "missing-segment"
    assert ack_code_for(caught.value.code) == "AR"
    ack = build_ack(raw, "AR", caught.value.code, error=caught.value.code, now=NOW)
    assert ack.split(b"\r")[1] == b"MSA|AR|C1|missing-segment"


@pytest.mark.parametrize(
    ("version", "msh9", "err"),
    [
        ("2.2", "ACK^A01", "ERR|^^^100&Segment sequence error&HL70357"),
        ("2.3", "ACK^A01", "ERR|^^^100&Segment sequence error&HL70357"),
        ("2.3.1", "ACK^A01^ACK", "ERR|^^^100&Segment sequence error&HL70357"),
        ("2.4", "ACK^A01^ACK", "ERR|^^^100&Segment sequence error&HL70357"),
        ("2.5", "ACK^A01^ACK", "ERR|||100^Segment sequence error^HL70357|E||||missing-segment"),
        ("2.5.1", "ACK^A01^ACK", "ERR|||100^Segment sequence error^HL70357|E||||missing-segment"),
        ("2.8", "ACK^A01^ACK", "ERR|||100^Segment sequence error^HL70357|E||||missing-segment"),
        ("", "ACK^A01^ACK", "ERR|||100^Segment sequence error^HL70357|E||||missing-segment"),
    ],
)
def test_err_segment_follows_the_message_version(version: str, msh9: str, err: str) -> None:
    raw = message(version, "EVN|A01|20240318")
    ack = build_ack(raw, "AR", "missing-segment", error="missing-segment", now=NOW)
    msh, _msa, err_segment, end = ack.decode().split("\r")
    assert msh.split("|")[8] == msh9
    assert msh.split("|")[11] == (version or "2.5")
    assert err_segment == err
    assert end == ""


def test_an_accepted_message_gets_no_err_in_any_version() -> None:
    for version in ("2.3", "2.5"):
        ack = build_ack(message(version, PID), "AA", now=NOW)
        assert not any(seg.startswith(b"ERR") for seg in ack.split(b"\r"))
