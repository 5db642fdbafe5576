"""The pure rules of FHIR delivery: request shape, retry classes, backoff, the ce_id LRU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caremesh.connectors.fhir_delivery import (
    DedupCache,
    backoff_delay,
    delivery_request,
    retryable_status,
)

BASE = "https://fhir.org-a.example.test/fhir/"


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            {"resourceType": "Observation", "id": "o-1"},
            ("PUT", f"{BASE}Observation/o-1", "Observation/o-1"),
        ),
        ({"resourceType": "Communication"}, ("POST", f"{BASE}Communication", None)),
        ({"resourceType": "Observation", "id": "a/../b"}, ("POST", f"{BASE}Observation", None)),
        ({"resourceType": "Observation", "id": 7}, ("POST", f"{BASE}Observation", None)),
        ({"resourceType": "../admin"}, None),
        ({"id": "x"}, None),
        (["not", "a", "resource"], None),
        (None, None),
    ],
)
def test_delivery_request(resource: object, expected: tuple[str, str, str | None] | None) -> None:
    assert delivery_request(BASE, resource) == expected


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        *[(s, True) for s in (500, 502, 503, 504, 408, 429)],
        *[(s, False) for s in (400, 401, 403, 404, 409, 422)],
    ],
)
def test_retryable_status(status: int, retry: bool) -> None:
    assert retryable_status(status) is retry


@given(
    st.integers(1, 200),
    st.floats(0.01, 5.0),
    st.floats(0.01, 60.0),
    st.floats(0.0, 0.999999),
)
def test_backoff_grows_is_capped_and_never_zero(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    delay = backoff_delay(attempt, base, cap, lambda: draw)
    ceiling = min(cap, base * 2 ** min(attempt - 1, 30))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= cap
    assert backoff_delay(attempt, base, cap, lambda: 0.0) <= backoff_delay(
        attempt + 1, base, cap, lambda: 0.0
    )


def test_dedup_cache_is_a_bounded_lru() -> None:
    cache = DedupCache(2)
    cache.add("a")
    cache.add("b")
    assert "a" in cache  # touches a: b is now the oldest
    cache.add("c")
    assert "b" not in cache
    assert "a" in cache
    assert "c" in cache
    assert len(cache) == 2
    off = DedupCache(0)
    off.add("a")
    assert "a" not in off
