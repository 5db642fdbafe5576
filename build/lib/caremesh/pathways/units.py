"""The UCUM units that pathway rules compare, and conversion between compatible ones.

Units are UCUM case-sensitive codes (The Unified Code for Units of Measure, release 2.1,
https://ucum.org/ucum). Only conversions that UCUM itself defines are made: kg, g and [lb_av] are
all masses, mmol/L and umol/L are both substance concentrations. A conversion that needs a
property of the measured substance is never made here: mg/dL of glucose is not converted to
mmol/L (it needs glucose's molar mass), and mmol/mol (IFCC HbA1c) is not converted to % (NGSP
HbA1c, an empirical master equation). A rule lists one threshold per unit family instead.
"""

from __future__ import annotations

from typing import Final

UCUM_SYSTEM: Final = "http://unitsofmeasure.org"

# code -> (family, factor to the family's base unit)
_UNITS: Final[dict[str, tuple[str, float]]] = {
    # mass, base kg
    "kg": ("mass", 1.0),
    "g": ("mass", 1e-3),
    "mg": ("mass", 1e-6),
    "[lb_av]": ("mass", 0.45359237),
    "[oz_av]": ("mass", 0.028349523125),
    # percent, base %
    "%": ("percent", 1.0),
    # IFCC HbA1c fraction, base mmol/mol (kept apart from %: not a UCUM conversion)
    "mmol/mol": ("substance-ratio", 1.0),
    # substance concentration, base mmol/L
    "mol/L": ("substance-concentration", 1e3),
    "mmol/L": ("substance-concentration", 1.0),
    "umol/L": ("substance-concentration", 1e-3),
    # mass concentration, base g/L
    "g/L": ("mass-concentration", 1.0),
    "g/dL": ("mass-concentration", 10.0),
    "mg/dL": ("mass-concentration", 1e-2),
    "mg/L": ("mass-concentration", 1e-3),
    # pressure, base kPa
    "kPa": ("pressure", 1.0),
    "mm[Hg]": ("pressure", 0.133322387415),
    # rates, base per minute
    "/min": ("rate", 1.0),
    "{beats}/min": ("rate", 1.0),
    "{breaths}/min": ("rate", 1.0),
    # temperature is affine, not a factor: only the one unit
    "Cel": ("temperature", 1.0),
    # length, base cm
    "cm": ("length", 1.0),
    "m": ("length", 100.0),
    "[in_i]": ("length", 2.54),
}

SUPPORTED_UNITS: Final = tuple(sorted(_UNITS))


def unit_family(unit: str) -> str | None:
    """The family of a supported UCUM code (mass, percent, ...), or None when unsupported."""
    found = _UNITS.get(unit)
    return found[0] if found else None


def convert(value: float, from_unit: str, to_unit: str) -> float | None:
    """`value` in `from_unit` expressed in `to_unit`, or None when the units are not compatible."""
    source = _UNITS.get(from_unit)
    target = _UNITS.get(to_unit)
    if source is None or target is None or source[0] != target[0]:
        return None
    if from_unit == to_unit:
        return value
    return value * source[1] / target[1]


def quantity_unit(quantity: dict[str, object]) -> str | None:
    """The UCUM code of a FHIR Quantity, or None when it carries no supported UCUM unit.

    `code` counts when `system` is UCUM or absent; the display `unit` counts only when it is
    itself a supported UCUM code (e.g. "kg"), never by guessing ("lbs" is not [lb_av]).
    """
    system = quantity.get("system")
    code = quantity.get("code")
    if isinstance(code, str) and system in (None, UCUM_SYSTEM) and code in _UNITS:
        return code
    unit = quantity.get("unit")
    if code is None and isinstance(unit, str) and unit in _UNITS:
        return unit
    return None
