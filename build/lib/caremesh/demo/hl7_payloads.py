"""HL7 v2.5 messages of the demo: ADT^A01/A03/A04 and ORU^R01 (ER7, UTF-8, CR segment ends).

Segments follow HL7 v2.5 (MSH of chapter 2, PID/PV1 of chapter 3, OBR/OBX of chapter 7) in the
shape `caremesh.fhir.hl7v2_map` reads: MSH-4 is the source id (so the MLLP listener recognises
the source), PID-3 repeats the hospital's local id (type PI) and the INS
(`<value>^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS`, the French IHE PAM convention).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from caremesh.demo.territory import Patient, Source

INS_OID: Final = "1.2.250.1.213.1.4.8"
_ESCAPES: Final = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
_CLASSES: Final = {"IMP": "I", "EMER": "E", "AMB": "O"}


@dataclass(frozen=True, slots=True)
class Result:
    """One OBX: a LOINC-coded numeric result with its UCUM unit."""

    loinc: str
    display: str
    value: float
    unit: str
    reference_range: str = ""
    flag: str = ""


def ts(when: datetime) -> str:
    """An HL7 v2 TS with seconds and the UTC offset."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def escape(text: str) -> str:
    """Text with the ER7 delimiters escaped (HL7 v2.5 §2.7.4)."""
    for raw, escaped in _ESCAPES:
        text = text.replace(raw, escaped)
    return text


def control_id(*parts: str) -> str:
    """A 20-character MSH-10 derived from the parts (stable across runs of the same seed)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:20].upper()


def _segment(name: str, fields: dict[int, str]) -> str:
    last = max(fields)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def _msh(source: Source, when: datetime, kind: str, control: str) -> str:
    app = "LAB" if kind.startswith("ORU") else "ADT"
    return "|".join(
        [
            "MSH",
            "^~\\&",
            f"{app}-{source.id}",
            source.id,
            "CAREMESH",
            "TERRITORY",
            ts(when),
            "",
            kind,
            control,
            "P",
            "2.5",
            "",
            "",
            "",
            "",
            "FRA",
            "UNICODE UTF-8",
        ]
    )


def _pid(patient: Patient, source: Source) -> str:
    gender = "F" if patient.gender == "female" else "M"
    local = f"{patient.local_id}^^^{source.id}&{source.oid}&ISO^PI"
    ins = f"{patient.ins}^^^ASIP-SANTE-INS-NIR&{INS_OID}&ISO^INS"
    name = f"{escape(patient.family.upper())}^{escape(patient.given)}^^^^^L"
    address = f"{escape(patient.line)}^^{escape(patient.city)}^^{patient.postal_code}^FRA^H"
    return _segment(
        "PID",
        {
            1: "1",
            3: f"{local}~{ins}",
            5: name,
            7: patient.birth_date.strftime("%Y%m%d"),
            8: gender,
            11: address,
        },
    )


def _pv1(
    source: Source,
    *,
    klass: str,
    visit: str,
    start: datetime | None,
    end: datetime | None,
    ward: str,
) -> str:
    fields = {1: "1", 2: _CLASSES[klass], 19: f"{visit}^^^{source.id}&{source.oid}.2&ISO^VN"}
    if ward:
        fields[3] = f"{ward}^^^{source.id}"
    if start is not None:
        fields[44] = ts(start)
    if end is not None:
        fields[36] = "01"  # HL7 table 0112: discharged to home or self care
        fields[45] = ts(end)
    return _segment("PV1", fields)


def adt(
    event: str,
    patient: Patient,
    source: Source,
    *,
    when: datetime,
    klass: str,
    visit: str,
    start: datetime,
    end: datetime | None = None,
    ward: str = "",
) -> bytes:
    """ADT^A01 (admit), ^A03 (discharge, `end` set) or ^A04 (register, e.g. an ED visit)."""
    structure = "ADT_A03" if event == "A03" else "ADT_A01"
    control = control_id("adt", event, source.id, visit)
    segments = [
        _msh(source, when, f"ADT^{event}^{structure}", control),
        _segment("EVN", {1: event, 2: ts(when)}),
        _pid(patient, source),
        _pv1(source, klass=klass, visit=visit, start=start, end=end, ward=ward),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def oru(
    patient: Patient,
    source: Source,
    *,
    when: datetime,
    order: str,
    panel: tuple[str, str],
    results: Sequence[Result],
) -> bytes:
    """ORU^R01: one OBR (LOINC panel) and one NM OBX per result, collected at `when`."""
    control = control_id("oru", source.id, order)
    segments = [
        _msh(source, when, "ORU^R01^ORU_R01", control),
        _pid(patient, source),
        _segment("PV1", {1: "1", 2: "O"}),
        _segment(
            "OBR",
            {1: "1", 2: f"PL{order}", 3: f"FI{order}", 4: f"{panel[0]}^{panel[1]}^LN", 7: ts(when)},
        ),
    ]
    for n, result in enumerate(results, start=1):
        segments.append(
            _segment(
                "OBX",
                {
                    1: str(n),
                    2: "NM",
                    3: f"{result.loinc}^{escape(result.display)}^LN",
                    5: f"{result.value:g}",
                    6: f"{result.unit}^{result.unit}^UCUM",
                    7: result.reference_range,
                    8: result.flag,
                    11: "F",
                    14: ts(when),
                },
            )
        )
    return ("\r".join(segments) + "\r").encode("utf-8")
