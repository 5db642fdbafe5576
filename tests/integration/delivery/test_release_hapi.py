"""HAPI FHIR's validator agrees: what the release converter makes is valid in the target release."""

from __future__ import annotations

from typing import Any

import pytest

from caremesh.fhir.releases import Unconvertible, convert
from tests.support.hapi import Hapi
from tests.unit.fhir.test_releases import PAIRS


@pytest.mark.parametrize(("name", "r4", "r5"), PAIRS, ids=[p[0] for p in PAIRS])
def test_hapi_validates_the_converted_resource_in_the_target_release(
    hapi_r4: Hapi, hapi_r5: Hapi, name: str, r4: dict[str, Any], r5: dict[str, Any]
) -> None:
    as_r5 = convert(r4, "R4", "R5")
    as_r4 = convert(r5, "R5", "R4")
    assert not isinstance(as_r5, Unconvertible)
    assert not isinstance(as_r4, Unconvertible)
    assert hapi_r5.validate(as_r5) == []
    assert hapi_r4.validate(as_r4) == []
