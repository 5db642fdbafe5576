"""The pure rules of FHIR delivery: request shape, retry classes, backoff, the ce_id LRU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caremesh.connectors.fhir_delivery import (
    DedupCache,
    _Offsets,
    backoff_delay,
    delivery_request,
    rest_order,
    retryable_status,
    transaction_bundle,
)
from caremesh.fhir.patient_key import INS_SYSTEM

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


def test_rest_order_puts_patients_first_and_keeps_each_group_in_order() -> None:
    assert rest_order(["Observation", "Patient", "Encounter", "Patient"]) == [1, 3, 0, 2]
    assert rest_order([]) == []


def test_offsets_commit_only_past_what_settled() -> None:
    offsets = _Offsets([10, 11, 12])
    assert offsets.done([11]) is None  # 10 is not settled yet
    assert offsets.done([10]) == 12
    assert offsets.done([12]) == 13


def test_a_transaction_bundle_matches_by_identifier_and_links_its_entries() -> None:
    ins = "2990175123456"
    patient = {
        "resourceType": "Patient",
        "id": "pabc",
        "identifier": [{"system": INS_SYSTEM, "value": ins}],
    }
    observation = {
        "resourceType": "Observation",
        "id": "cobs",
        "identifier": [{"system": "urn:caremesh:source:hosp-a", "value": "o1"}],
        "subject": {
            "reference": "Patient/pabc",
            "identifier": {"system": INS_SYSTEM, "value": ins},
        },
        "encounter": {
            "reference": "Encounter/cenc",
            "identifier": {"system": "urn:caremesh:source:hosp-a", "value": "e1"},
        },
    }
    bundle = transaction_bundle([observation, patient])
    assert bundle["type"] == "transaction"
    first, second = bundle["entry"]  # type: ignore[misc]
    assert first["request"] == {"method": "PUT", "url": f"Patient?identifier={INS_SYSTEM}|{ins}"}
    assert "id" not in first["resource"]  # the receiver's own record keeps its id
    assert second["request"]["url"] == "Observation?identifier=urn:caremesh:source:hosp-a|o1"
    assert second["resource"]["subject"]["reference"] == first["fullUrl"]
    assert second["resource"]["encounter"]["reference"] == (
        "Encounter?identifier=urn:caremesh:source:hosp-a|e1"
    )
    alone = transaction_bundle([observation])["entry"][0]  # type: ignore[index]
    assert alone["resource"]["subject"]["reference"] == f"Patient?identifier={INS_SYSTEM}|{ins}"
