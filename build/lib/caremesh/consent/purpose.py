"""Purpose-of-use codes and their hierarchy: HL7 v3 ActReason, the PurposeOfUse subtree.

Follows the HL7 Terminology (THO) CodeSystem `http://terminology.hl7.org/CodeSystem/v3-ActReason`
version 2.1.0 (the release the FHIR R5 core specification references), `hierarchyMeaning`
`is-a`: every concept below `PurposeOfUse` is copied here with its `subsumedBy` parents, checked
against that release's CodeSystem JSON. Where older prose differs from the release, the release
wins: DSRCH and POARCH sit directly under HRESCH (not under CLINTRCH), CAREMGT sits under HOPERAT
only, and there is no PATRCH code.

`implies(granted, requested)` is subsumption: a consent provision for TREAT covers a query for
ETREAT or BTG, one for HRESCH covers CLINTRCH, but nothing covers its parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

ACT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_REASON_VERSION: Final = "2.1.0"
ROOT: Final = "PurposeOfUse"

# (code, display, parents) in the order of the release's hierarchy listing.
_CONCEPTS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("PurposeOfUse", "purpose of use", ()),
    ("HMARKT", "healthcare marketing", ("PurposeOfUse",)),
    ("HOPERAT", "healthcare operations", ("PurposeOfUse",)),
    ("CAREMGT", "care management", ("HOPERAT",)),
    ("DONAT", "donation", ("HOPERAT",)),
    ("FRAUD", "fraud", ("HOPERAT",)),
    ("GOV", "government", ("HOPERAT",)),
    ("HACCRED", "health accreditation", ("HOPERAT",)),
    ("HCOMPL", "health compliance", ("HOPERAT",)),
    ("HDECD", "decedent", ("HOPERAT",)),
    ("HDIRECT", "directory", ("HOPERAT",)),
    ("HDM", "healthcare delivery management", ("HOPERAT",)),
    ("HLEGAL", "legal", ("HOPERAT",)),
    ("HOUTCOMS", "health outcome measure", ("HOPERAT",)),
    ("HPRGRP", "health program reporting", ("HOPERAT",)),
    ("HQUALIMP", "health quality improvement", ("HOPERAT",)),
    ("HSYSADMIN", "health system administration", ("HOPERAT",)),
    ("LABELING", "labeling", ("HSYSADMIN",)),
    ("METAMGT", "metadata management", ("HSYSADMIN",)),
    ("MEMADMIN", "member administration", ("HOPERAT",)),
    ("MILCDM", "military command", ("HOPERAT",)),
    ("PATADMIN", "patient administration", ("HOPERAT",)),
    ("PATSFTY", "patient safety", ("HOPERAT",)),
    ("PERFMSR", "performance measure", ("HOPERAT",)),
    ("RECORDMGT", "records management", ("HOPERAT",)),
    ("SYSDEV", "system development", ("HOPERAT",)),
    ("HTEST", "test health data", ("SYSDEV",)),
    ("TRAIN", "training", ("HOPERAT",)),
    ("HPAYMT", "healthcare payment", ("PurposeOfUse",)),
    ("CLMATTCH", "claim attachment", ("HPAYMT",)),
    ("COVAUTH", "coverage authorization", ("HPAYMT",)),
    ("COVERAGE", "coverage under policy or program", ("HPAYMT",)),
    ("ELIGDTRM", "eligibility determination", ("COVERAGE",)),
    ("ELIGVER", "eligibility verification", ("COVERAGE",)),
    ("ENROLLM", "enrollment", ("COVERAGE",)),
    ("MILDCRG", "military discharge", ("COVERAGE",)),
    ("REMITADV", "remittance advice", ("HPAYMT",)),
    ("HRESCH", "healthcare research", ("PurposeOfUse",)),
    ("BIORCH", "biomedical research", ("HRESCH",)),
    ("CLINTRCH", "clinical trial research", ("HRESCH",)),
    ("CLINTRCHNPC", "clinical trial research without patient care", ("CLINTRCH",)),
    ("CLINTRCHPC", "clinical trial research with patient care", ("CLINTRCH",)),
    ("PRECLINTRCH", "preclinical trial research", ("CLINTRCH",)),
    ("DSRCH", "disease specific healthcare research", ("HRESCH",)),
    ("POARCH", "population origins or ancestry healthcare research", ("HRESCH",)),
    ("TRANSRCH", "translational healthcare research", ("HRESCH",)),
    ("PATRQT", "patient requested", ("PurposeOfUse",)),
    ("FAMRQT", "family requested", ("PATRQT",)),
    ("PWATRNY", "power of attorney", ("PATRQT",)),
    ("SUPNWK", "support network", ("PATRQT",)),
    ("PUBHLTH", "public health", ("PurposeOfUse",)),
    ("DISASTER", "disaster", ("PUBHLTH",)),
    ("THREAT", "threat", ("PUBHLTH",)),
    ("TREAT", "treatment", ("PurposeOfUse",)),
    ("CLINTRL", "clinical trial", ("TREAT",)),
    ("COC", "coordination of care", ("TREAT",)),
    ("ETREAT", "Emergency Treatment", ("TREAT",)),
    ("BTG", "break the glass", ("ETREAT",)),
    ("ERTREAT", "emergency room treatment", ("ETREAT",)),
    ("POPHLTH", "population health", ("TREAT",)),
)

PARENTS: Final[Mapping[str, tuple[str, ...]]] = {code: ps for code, _, ps in _CONCEPTS}
"""Each purpose code and its direct parents (`subsumedBy`)."""

DISPLAY: Final[Mapping[str, str]] = {code: display for code, display, _ in _CONCEPTS}
"""Each purpose code and its display text in the release."""


def _closure() -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}

    def up(code: str) -> frozenset[str]:
        if code not in out:
            found: set[str] = set()
            for parent in PARENTS[code]:
                found.add(parent)
                found |= up(parent)
            out[code] = frozenset(found)
        return out[code]

    for code in PARENTS:
        up(code)
    return out


_ANCESTORS: Final = _closure()


def is_purpose(code: str) -> bool:
    """True when `code` is a PurposeOfUse concept of the release."""
    return code in PARENTS


def ancestors(code: str) -> frozenset[str]:
    """Every concept that subsumes `code` (not `code` itself); empty for unknown codes."""
    return _ANCESTORS.get(code, frozenset())


def lineage(code: str) -> tuple[str, ...]:
    """`code` then its ancestors, nearest first (breadth-first), each once."""
    out = [code]
    frontier = [code]
    while frontier:
        nxt: list[str] = []
        for item in frontier:
            for parent in PARENTS.get(item, ()):
                if parent not in out:
                    out.append(parent)
                    nxt.append(parent)
        frontier = nxt
    return tuple(out)


def implies(granted: str, requested: str) -> bool:
    """True when a rule about `granted` covers a use for `requested` (same code or an ancestor).

    Unknown codes only cover themselves.
    """
    return granted == requested or granted in ancestors(requested)


def related(a: str, b: str) -> bool:
    """True when one purpose subsumes the other (or they are equal)."""
    return implies(a, b) or implies(b, a)
