"""Read HL7 v2 messages (ER7 encoding, HL7 v2.5 chapter 2 control segments) and build ACKs.

Accepted messages: ADT^A01, A02, A03, A04, A08 and ORU^R01. Reading is done with the `hl7`
package for segments and fields; repetitions, components, subcomponents and escape sequences
(HL7 v2.5 §2.7) are split here, because `hl7.util.unescape` logs field values on bad escapes.

Text decoding: MSH-18 `UNICODE UTF-8` → UTF-8, `8859/1` → Latin-1; otherwise UTF-8, falling back
to Latin-1 (which reads every byte). Segments may end with CR, LF or CRLF; MLLP framing bytes
(0x0B, 0x1C) around the message are ignored.

Dates (TS/DTM `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`) become FHIR `date` or `dateTime`; a time
without an offset is read in the zone the caller names (default Europe/Paris, the territory's),
since FHIR requires an offset on every time; an unreadable date is left out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from datetime import date as calendar_date
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hl7

from caremesh.errors import InvalidHl7Error

AckCode = Literal["AA", "AE", "AR"]

SUPPORTED_EVENTS: Final = frozenset(
    {("ADT", "A01"), ("ADT", "A02"), ("ADT", "A03"), ("ADT", "A04"), ("ADT", "A08"), ("ORU", "R01")}
)
DEFAULT_ZONE: Final = "Europe/Paris"
ERROR_CODES: Final = ("no-msh", "malformed", "unsupported-message-type", "missing-segment")
"""Every code `InvalidHl7Error` is raised with by `parse_hl7`."""

# HL7 table 0357 (message error condition codes) for the ERR segment of an ACK.
_HL7_ERRORS: Final = {
    "no-msh": ("100", "Segment sequence error"),
    "malformed": ("102", "Data type error"),
    "unsupported-message-type": ("200", "Unsupported message type"),
    "missing-segment": ("100", "Segment sequence error"),
    "missing-field": ("101", "Required field missing"),
}
_INTERNAL_ERROR: Final = ("207", "Application internal error")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 _.:,;()/\-]")
_TS = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(\d{2})?(\.\d{1,4})?)?(?:([+-])(\d{2})(\d{2}))?"
)


@dataclass(frozen=True, slots=True)
class Separators:
    """The delimiters a message declares in MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written: component, repetition, escape, subcomponent."""
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment; `fields[n]` is field n as written (MSH: fields[1] is MSH-1, as in HL7)."""

    name: str
    fields: tuple[str, ...]
    seps: Separators

    def raw(self, number: int) -> str:
        """Field `number` as written (escaped), or empty when absent."""
        return self.fields[number] if 0 < number < len(self.fields) else ""

    def repetitions(self, number: int) -> list[str]:
        """The repetitions of field `number`, as written; empty when the field is empty."""
        text = self.raw(number)
        return text.split(self.seps.repetition) if text else []

    def get(self, number: int, component: int = 1, sub: int = 1, repetition: int = 0) -> str:
        """One unescaped value, `PID-3.4.2` being `get(3, 4, 2)`; empty when absent."""
        reps = self.repetitions(number)
        if repetition >= len(reps):
            return ""
        return component_of(reps[repetition], self.seps, component, sub)


@dataclass(frozen=True, slots=True)
class Hl7Message:
    """What the MLLP listener and the ACK need: MSH fields, never patient content."""

    message_type: str
    trigger_event: str
    control_id: str
    version: str
    processing_id: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    seps: Separators


def component_of(text: str, seps: Separators, component: int = 1, sub: int = 1) -> str:
    """Component `component`, subcomponent `sub` of one repetition, unescaped."""
    parts = text.split(seps.component)
    if component > len(parts):
        return ""
    subs = parts[component - 1].split(seps.subcomponent)
    return unescape(subs[sub - 1], seps) if sub <= len(subs) else ""


def unescape(text: str, seps: Separators) -> str:
    """Resolve HL7 escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\); drop others."""
    if seps.escape not in text:
        return text
    plain = {"F": seps.field, "S": seps.component, "T": seps.subcomponent}
    plain |= {"R": seps.repetition, "E": seps.escape, ".br": "\n"}
    pieces = text.split(seps.escape)
    out = [pieces[0]]
    for position in range(1, len(pieces)):
        piece = pieces[position]
        if position % 2 == 0:
            out.append(piece)
        elif piece in plain:
            out.append(plain[piece])
        elif piece.startswith("X") and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", piece[1:]):
            out.append(bytes.fromhex(piece[1:]).decode("latin-1"))
    return "".join(out)


def read_segments(raw: bytes) -> list[Segment]:
    """All segments of one message; raise InvalidHl7Error(`no-msh` or `malformed`)."""
    text = _decode(_unframe(raw))
    if not text.startswith("MSH"):
        raise InvalidHl7Error("no-msh", "the message does not start with an MSH segment")
    seps = _separators(text)
    try:
        parsed = hl7.parse(text)
        segments = [tuple(str(field) for field in segment) for segment in parsed]
    except (hl7.HL7Exception, ValueError, IndexError, AssertionError, TypeError):
        raise InvalidHl7Error("malformed", "the message cannot be split into segments") from None
    out = []
    for fields in segments:
        if not any(fields):
            continue  # a blank line between segments
        if not _SEGMENT_NAME.fullmatch(fields[0]):
            raise InvalidHl7Error("malformed", "a segment has no valid segment name")
        out.append(Segment(fields[0], fields, seps))
    return out


def summarise(msh: Segment) -> Hl7Message:
    """The MSH summary of a message from its MSH segment."""
    return Hl7Message(
        message_type=msh.get(9, 1),
        trigger_event=msh.get(9, 2),
        control_id=msh.get(10),
        version=msh.get(12, 1),
        processing_id=msh.get(11, 1),
        sending_application=msh.raw(3),
        sending_facility=msh.raw(4),
        receiving_application=msh.raw(5),
        receiving_facility=msh.raw(6),
        seps=msh.seps,
    )


def read_msh(raw: bytes) -> Hl7Message:
    """The MSH summary of any message, supported or not; raise InvalidHl7Error if there is none."""
    return summarise(read_segments(raw)[0])


def check_supported(summary: Hl7Message) -> Hl7Message:
    """The summary itself if caremesh accepts the message; else raise InvalidHl7Error."""
    if (summary.message_type, summary.trigger_event) not in SUPPORTED_EVENTS:
        raise InvalidHl7Error(
            "unsupported-message-type", "accepted: ADT^A01/A02/A03/A04/A08 and ORU^R01"
        )
    if not summary.control_id:
        raise InvalidHl7Error("malformed", "MSH-10 (message control id) is empty")
    return summary


def parse_hl7(raw: bytes) -> Hl7Message:
    """The summary of a message caremesh accepts; raise InvalidHl7Error (codes: ERROR_CODES).

    A supported message must also be one that can become FHIR: every accepted ADT and ORU^R01
    carries its patient in a PID segment (`missing-segment` otherwise; `hl7v2_map` needs it).
    """
    segments = read_segments(raw)
    summary = check_supported(summarise(segments[0]))
    if not any(segment.name == "PID" for segment in segments):
        raise InvalidHl7Error("missing-segment", f"{summary.message_type} without a PID segment")
    return summary


def build_ack(
    message: bytes | Hl7Message,
    code: AckCode,
    text: str = "",
    *,
    error: str | None = None,
    control_id: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """An original-mode ACK (HL7 v2.5 §2.9.2): MSH with sender and receiver swapped, MSA, ERR.

    `text` goes to MSA-3 (and ERR-8 from v2.5) after dropping every character but letters,
    digits and `_.:,;()/-` (so no delimiter) and cutting it to 80: callers pass a reason code,
    never message content. `error` (a rejection code) picks the HL7 table 0357 code; an ERR
    segment is written for AE and AR, in the layout of the message's own version (MSH-12):
    before v2.5 the segment has only ERR-1 (v2.3/v2.4 "error code and location",
    `^^^code&text&HL70357`); from v2.5 ERR-1 is left empty and the code is in ERR-3, the
    severity in ERR-4. MSH-9 of the ACK has the message structure component (`ACK`) from
    v2.3.1, as the standard added it there. A message without a readable MSH gets an ACK with
    empty MSA-2 in the v2.5 layout.
    """
    summary = message if isinstance(message, Hl7Message) else _lenient_msh(message)
    seps = summary.seps
    when = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S%z")
    own_id = control_id or _ack_control_id(summary.control_id, code, when)
    reason = _SAFE_TEXT.sub(" ", text)[:80].strip()
    f, c = seps.field, seps.component
    version = _version(summary.version)
    message_type = ["ACK", _safe(summary.trigger_event, seps)]
    if version >= (2, 3, 1):
        message_type.append("ACK")
    msh = f.join(
        [
            "MSH",
            seps.encoding_characters,
            summary.receiving_application,
            summary.receiving_facility,
            summary.sending_application,
            summary.sending_facility,
            when,
            "",
            c.join(message_type),
            own_id,
            _safe(summary.processing_id, seps) or "P",
            _safe(summary.version, seps) or "2.5",
        ]
    )
    msa = f.join(["MSA", code, _safe(summary.control_id, seps)] + ([reason] if reason else []))
    segments = [msh, msa]
    if code != "AA":
        number, label = _HL7_ERRORS.get(error or "", _INTERNAL_ERROR)
        if version < (2, 5):
            coded = seps.subcomponent.join([number, label, "HL70357"])
            segments.append(f.join(["ERR", c.join(["", "", "", coded])]))
        else:
            err_code = c.join([number, label, "HL70357"])
            segments.append(f.join(["ERR", "", "", err_code, "E", "", "", "", reason]))
    return ("\r".join(segments) + "\r").encode("ascii", "replace")


def fhir_date(value: str) -> str | None:
    """An HL7 TS/DT as a FHIR `date` (`YYYY`, `YYYY-MM` or `YYYY-MM-DD`), or None."""
    match = _TS.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day = match.group(1), match.group(2), match.group(3)
    try:
        calendar_date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return None
    return "-".join(part for part in (year, month, day) if part)


def fhir_datetime(value: str, zone: str | None = DEFAULT_ZONE) -> str | None:
    """An HL7 TS/DTM as a FHIR `dateTime`; a time without offset is read in `zone`, or None."""
    match = _TS.fullmatch(value.strip())
    day_text = fhir_date(value)
    if match is None or day_text is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if hour is None:
        return day_text
    if month is None or day is None:
        return None
    if sign is not None:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24) or int(off_m) >= 60:
            return None
        zone_info: tzinfo = timezone(-offset if sign == "-" else offset)
    elif zone is not None:
        try:
            zone_info = ZoneInfo(zone)
        except (ValueError, ZoneInfoNotFoundError):
            return day_text
    else:
        return day_text
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute or 0),
            int(second or 0),
            tzinfo=zone_info,
        )
    except ValueError:
        return None
    text = moment.isoformat()
    return text[:19] + fraction + text[19:] if fraction else text


def _version(text: str) -> tuple[int, ...]:
    """MSH-12 as numbers (`2.3.1` → (2, 3, 1)); v2.5 when absent or unreadable."""
    parts = text.strip().split(".")
    if not all(part.isdigit() for part in parts):
        return (2, 5)
    return tuple(int(part) for part in parts)


def _lenient_msh(raw: bytes) -> Hl7Message:
    """The MSH summary of a message, or an empty one when it has none (for AR answers)."""
    try:
        return read_msh(raw)
    except InvalidHl7Error:
        return Hl7Message("", "", "", "", "", "", "", "", "", Separators())


def _ack_control_id(original: str, code: str, when: str) -> str:
    """A deterministic ACK control id (MSH-10 is at most 20 characters in v2.5)."""
    digest = hashlib.sha256(f"{original}\x1f{code}\x1f{when}".encode()).hexdigest()
    return "ACK" + digest[:17]


def _safe(value: str, seps: Separators) -> str:
    """A value copied into the ACK, with any delimiter removed."""
    delimiters = seps.field + seps.encoding_characters + "\r\n"
    return "".join(ch for ch in value if ch not in delimiters)


def _unframe(raw: bytes) -> bytes:
    """Strip MLLP framing and surrounding whitespace; normalise segment ends to CR."""
    body = raw.strip(b"\x0b\x1c\r\n\t ")
    return body.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _decode(raw: bytes) -> str:
    """Text of a message per MSH-18, defaulting to UTF-8 with a Latin-1 fallback."""
    head = raw.split(b"\r", 1)[0].upper()
    if b"8859/1" in head and b"UTF-8" not in head:
        return raw.decode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if b"UNICODE UTF-8" in head:
            raise InvalidHl7Error("malformed", "MSH-18 says UTF-8 but the bytes are not") from None
        return raw.decode("latin-1")


def _separators(text: str) -> Separators:
    """MSH-1 and MSH-2, checked: five distinct delimiters, none alphanumeric or a line end."""
    if len(text) < 8:
        raise InvalidHl7Error("malformed", "MSH is too short to declare its delimiters")
    field = text[3]
    end = text.find(field, 4)
    encoding = text[4:end] if end > 0 else ""
    chars = field + encoding
    if (
        len(encoding) != 4
        or len(set(chars)) != 5
        or any(ch.isalnum() or ch in "\r\n " for ch in chars)
    ):
        raise InvalidHl7Error("malformed", "MSH-1/MSH-2 do not declare valid delimiters")
    return Separators(field, encoding[0], encoding[1], encoding[2], encoding[3])
