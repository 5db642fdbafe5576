"""HL7 v2 reading: MSH summary, rejections, ACK format, escapes and dates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from caremesh.errors import InvalidHl7Error
from caremesh.fhir.hl7v2 import (
    Separators,
    build_ack,
    fhir_date,
    fhir_datetime,
    parse_hl7,
    read_segments,
    unescape,
)

DATA = Path(__file__).parents[2] / "data" / "hl7"
NOW = datetime(2024, 3, 18, 9, 0, 0, tzinfo=UTC)


def sample(name: str) -> bytes:
    return (DATA / f"{name}.hl7").read_bytes()


@pytest.mark.parametrize(
    ("name", "kind", "event", "control_id"),
    [
        ("adt_a01", "ADT", "A01", "SYNA01-0001"),
        ("adt_a03", "ADT", "A03", "SYNA03-0002"),
        ("adt_a08", "ADT", "A08", "SYNA08-0003"),
        ("oru_r01", "ORU", "R01", "SYNR01-0004"),
    ],
)
def test_parse_hl7_summary(name: str, kind: str, event: str, control_id: str) -> None:
    summary = parse_hl7(sample(name))
    assert (summary.message_type, summary.trigger_event) == (kind, event)
    assert summary.control_id == control_id
    assert summary.version == "2.5"
    assert summary.sending_application == ("SYNTH-LAB" if kind == "ORU" else "SYNTH-ADT")


def test_framing_and_line_endings_are_tolerated() -> None:
    raw = sample("adt_a01")
    for variant in (
        b"\x0b" + raw + b"\x1c\r",
        raw.replace(b"\r", b"\n"),
        raw.replace(b"\r", b"\r\n"),
    ):
        assert parse_hl7(variant).control_id == "SYNA01-0001"
        assert [s.name for s in read_segments(variant)] == ["MSH", "EVN", "PID", "PV1"]


MSH = b"MSH|^~\\&|A|B|C|D|20240101||"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "no-msh"),
        (b"PID|1||123", "no-msh"),
        (b"\x00\x01garbage", "no-msh"),
        (b"MSH", "malformed"),
        (b"MSH|^~", "malformed"),
        (b"MSH|^~\\&", "malformed"),
        (b"MSHA^~\\&|x|y", "malformed"),
        (b"MSH|^^\\&|A|B", "malformed"),
        (MSH + b"ADT^A01|CTRL|P|2.5\rP!D|1", "malformed"),
        (MSH + b"ADT^A01||P|2.5\rPID|1", "malformed"),
        (MSH + b"ADT^A05|CTRL|P|2.5\rPID|1", "unsupported-message-type"),
        (MSH + b"ORM^O01|CTRL|P|2.5\rPID|1", "unsupported-message-type"),
        (MSH + b"|CTRL|P|2.5", "unsupported-message-type"),
        (b"MSH|^~\\&|A|B|C|D|x||ADT^A01|C|P|2.5|||||FRA|UNICODE UTF-8\r\xff\xfe", "malformed"),
    ],
)
def test_rejections(raw: bytes, code: str) -> None:
    with pytest.raises(InvalidHl7Error) as caught:
        parse_hl7(raw)
    assert caught.value.code == code


def test_latin1_message_is_read() -> None:
    raw = MSH + b"ADT^A01|CTRL|P|2.5|||||FRA|8859/1\rPID|1||1^^^X||H\xe9l\xe8ne"
    pid = read_segments(raw)[1]
    assert pid.get(5) == "H\u00e9l\u00e8ne"


def test_ack_aa_swaps_sender_and_receiver() -> None:
    ack = build_ack(sample("adt_a01"), "AA", now=NOW, control_id="ACK1")
    assert ack == (
        b"MSH|^~\\&|CAREMESH|TERRITORY|SYNTH-ADT|SYNTH-HOSP|20240318090000+0000||ACK^A01^ACK"
        b"|ACK1|P|2.5\rMSA|AA|SYNA01-0001\r"
    )


def test_ack_ae_has_msa_text_and_err_segment() -> None:
    ack = build_ack(parse_hl7(sample("oru_r01")), "AE", "validation-failed", error="malformed")
    segments = ack.decode().split("\r")
    assert segments[0].split("|")[8] == "ACK^R01^ACK"
    assert segments[1] == "MSA|AE|SYNR01-0004|validation-failed"
    assert segments[2] == "ERR|||102^Data type error^HL70357|E||||validation-failed"
    assert segments[3] == ""
    assert len(segments[0].split("|")[9]) <= 20


def test_ack_for_unreadable_message_is_ar_with_empty_control_id() -> None:
    ack = build_ack(b"not hl7 at all", "AR", "no-msh", error="no-msh", now=NOW)
    segments = ack.decode().split("\r")
    assert segments[1] == "MSA|AR||no-msh"
    assert segments[2].startswith("ERR|||100^")


def test_ack_text_cannot_inject_delimiters_or_segments() -> None:
    ack = build_ack(sample("adt_a01"), "AR", "bad|field^x~y\\z&w\rPID|1", now=NOW)
    msa = ack.decode().split("\r")[1]
    assert msa.count("|") == 3
    assert not any(ch in msa.split("|", 3)[3] for ch in "|^~\\&")
    assert ack.count(b"\r") == 3


def test_ack_never_carries_patient_content() -> None:
    for code in ("AA", "AE", "AR"):
        ack = build_ack(sample("adt_a01"), code, "mapping-failed")  # type: ignore[arg-type]
        for secret in (b"SYNTHNOM", b"Camille", b"100000000000017", b"LOCAL7788", b"19500402"):
            assert secret not in ack


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("A\\F\\B", "A|B"),
        ("A\\S\\B\\T\\C\\R\\D\\E\\", "A^B&C~D\\"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("caf\\XE9\\", "caf\u00e9"),
        ("drop\\Zunknown\\ped", "dropped"),
    ],
)
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text, Separators()) == expected


@pytest.mark.parametrize(
    ("value", "date", "datetime_text"),
    [
        ("1950", "1950", "1950"),
        ("195004", "1950-04", "1950-04"),
        ("19500402", "1950-04-02", "1950-04-02"),
        ("202403151030", "2024-03-15", "2024-03-15T10:30:00+01:00"),
        ("20240715103000", "2024-07-15", "2024-07-15T10:30:00+02:00"),
        ("20240315103000.25+0000", "2024-03-15", "2024-03-15T10:30:00.25+00:00"),
        ("20240315103000-0500", "2024-03-15", "2024-03-15T10:30:00-05:00"),
        ("20241301", None, None),
        ("20240230", None, None),
        ("2024031525", "2024-03-15", None),
        ("20240315103000+9900", "2024-03-15", None),
        ("", None, None),
        ("yesterday", None, None),
    ],
)
def test_hl7_dates(value: str, date: str | None, datetime_text: str | None) -> None:
    assert fhir_date(value) == date
    assert fhir_datetime(value) == datetime_text


def test_time_without_offset_and_no_zone_keeps_the_date_only() -> None:
    assert fhir_datetime("202403151030", zone=None) == "2024-03-15"
