"""The v3 ActReason purpose-of-use hierarchy and `implies`."""

from __future__ import annotations

import pytest

from caremesh.consent import purpose
from caremesh.consent.purpose import implies


@pytest.mark.parametrize(
    ("granted", "requested", "expected"),
    [
        pytest.param("TREAT", "TREAT", True, id="same-code"),
        pytest.param("TREAT", "ETREAT", True, id="treat-covers-etreat"),
        pytest.param("TREAT", "BTG", True, id="treat-covers-btg-two-levels"),
        pytest.param("ETREAT", "TREAT", False, id="etreat-does-not-cover-treat"),
        pytest.param("HRESCH", "CLINTRCH", True, id="hresch-covers-clintrch"),
        pytest.param("HRESCH", "CLINTRCHPC", True, id="hresch-covers-clintrchpc"),
        pytest.param("HRESCH", "TREAT", False, id="hresch-does-not-cover-treat"),
        pytest.param("CLINTRCH", "DSRCH", False, id="dsrch-sits-under-hresch-not-clintrch"),
        pytest.param("HOPERAT", "METAMGT", True, id="hoperat-covers-metamgt"),
        pytest.param("HOPERAT", "CAREMGT", True, id="hoperat-covers-caremgt"),
        pytest.param("TREAT", "CAREMGT", False, id="caremgt-is-not-treatment-in-2-1-0"),
        pytest.param("PUBHLTH", "THREAT", True, id="pubhlth-covers-threat"),
        pytest.param("PATRQT", "PWATRNY", True, id="patrqt-covers-pwatrny"),
        pytest.param("PurposeOfUse", "HMARKT", True, id="root-covers-everything"),
        pytest.param("NOTACODE", "NOTACODE", True, id="unknown-covers-itself"),
        pytest.param("NOTACODE", "TREAT", False, id="unknown-covers-nothing-else"),
        pytest.param("TREAT", "NOTACODE", False, id="nothing-covers-unknown"),
    ],
)
def test_implies(granted: str, requested: str, expected: bool) -> None:
    assert implies(granted, requested) is expected


def test_every_parent_is_a_known_code_and_the_root_is_unique() -> None:
    roots = [code for code, parents in purpose.PARENTS.items() if not parents]
    assert roots == [purpose.ROOT]
    for parents in purpose.PARENTS.values():
        assert all(purpose.is_purpose(p) for p in parents)


def test_every_code_descends_from_the_root_without_cycles() -> None:
    for code in purpose.PARENTS:
        assert code not in purpose.ancestors(code)
        if code != purpose.ROOT:
            assert purpose.ROOT in purpose.ancestors(code)


def test_the_codes_named_by_the_design_exist() -> None:
    named = {
        "HMARKT", "HOPERAT", "CAREMGT", "DONAT", "FRAUD", "GOV", "HACCRED", "HCOMPL", "HDECD",
        "HDIRECT", "HDM", "HLEGAL", "HOUTCOMS", "HPRGRP", "HQUALIMP", "HSYSADMIN", "LABELING",
        "METAMGT", "MEMADMIN", "MILCDM", "PATADMIN", "PATSFTY", "PERFMSR", "RECORDMGT", "SYSDEV",
        "TRAIN", "HPAYMT", "HRESCH", "BIORCH", "CLINTRCH", "DSRCH", "POARCH", "TRANSRCH",
        "PATRQT", "FAMRQT", "PWATRNY", "SUPNWK", "PUBHLTH", "DISASTER", "THREAT", "TREAT",
        "CLINTRL", "ETREAT", "BTG", "ERTREAT", "POPHLTH",
    }  # fmt: skip
    assert named <= set(purpose.PARENTS)


def test_lineage_is_nearest_first() -> None:
    assert purpose.lineage("BTG") == ("BTG", "ETREAT", "TREAT", "PurposeOfUse")
    assert purpose.lineage("UNKNOWN") == ("UNKNOWN",)
