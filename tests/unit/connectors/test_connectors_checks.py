"""Edge checks of FHIR input, stable message ids and the streamed body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caremesh.connectors.fhir_checks import (
    Checked,
    check_fhir,
    idempotency_key_problem,
    stable_message_id,
)
from caremesh.connectors.http_ingest import BUNDLE_TYPES, BodyTooLargeError, read_limited
from caremesh.envelope import body_message_id, message_id
from caremesh.fhir.ingest import Rejection
from tests.unit.connectors.connectors_synth import bundle, dumps, observation, patient


@pytest.mark.parametrize(
    ("body", "expected_type", "bundles", "code"),
    [
        (b"", None, None, "empty-body"),
        (b"   \n", None, None, "empty-body"),
        (b"{not json", None, None, "invalid-json"),
        (b'{"resourceType": "Patient", "x": "\xff"}', None, None, "invalid-utf8"),
        (b"[" * 100_000 + b"]" * 100_000, None, None, "too-deep"),
        (b"[1, 2]", None, None, "not-an-object"),
        (b'{"id": "x"}', None, None, "missing-resource-type"),
        (dumps(patient()), "Observation", None, "resource-type-mismatch"),
        (dumps(patient()), None, BUNDLE_TYPES, "not-a-bundle"),
        (dumps(bundle("searchset")), None, BUNDLE_TYPES, "unsupported-bundle-type"),
        (dumps(bundle("collection")), None, BUNDLE_TYPES, "unsupported-bundle-type"),
        (dumps(patient(birthDate="1950-13-45")), "Patient", None, "validation-failed"),
        (dumps({"resourceType": "NoSuchThing"}), None, None, "unknown-resource-type"),
    ],
)
def test_rejections(
    body: bytes, expected_type: str | None, bundles: frozenset[str] | None, code: str
) -> None:
    result = check_fhir(
        body, source="s1", release_hint=None, expected_type=expected_type, bundle_types=bundles
    )
    assert isinstance(result, Rejection)
    assert result.code == code


@pytest.mark.parametrize(
    ("obj", "expected_type", "bundles", "resources", "identifier"),
    [
        (patient(), "Patient", None, 1, None),
        (observation(), "Observation", None, 1, None),
        (bundle("transaction"), None, BUNDLE_TYPES, 2, None),
        (bundle("batch", "B-7"), None, BUNDLE_TYPES, 2, "urn:synth:bundle|B-7"),
    ],
)
def test_accepted(
    obj: dict[str, object],
    expected_type: str | None,
    bundles: frozenset[str] | None,
    resources: int,
    identifier: str | None,
) -> None:
    result = check_fhir(
        dumps(obj),
        source="s1",
        release_hint=None,
        expected_type=expected_type,
        bundle_types=bundles,
    )
    assert isinstance(result, Checked)
    assert result.resources == resources
    assert result.identifier == identifier


def test_release_hint_is_honoured() -> None:
    r5_only = {
        **observation(),
        "status": "final",
        "triggeredBy": [{"type": "reflex", "observation": {"reference": "Observation/o0"}}],
    }
    assert isinstance(check_fhir(dumps(r5_only), source="s", release_hint="R4"), Rejection)
    checked = check_fhir(dumps(r5_only), source="s", release_hint="R5")
    assert isinstance(checked, Checked)
    assert checked.release == "R5"


def test_message_id_order_key_then_identifier_then_body() -> None:
    body = dumps(bundle("batch", "B-1"))
    checked = check_fhir(body, source="s1", release_hint=None)
    assert isinstance(checked, Checked)
    assert stable_message_id("s1", body, checked, "key-1") == message_id("s1", "key-1")
    assert stable_message_id("s1", body, checked) == message_id("s1", "urn:synth:bundle|B-1")
    plain = dumps(patient())
    checked = check_fhir(plain, source="s1", release_hint=None)
    assert isinstance(checked, Checked)
    assert stable_message_id("s1", plain, checked) == body_message_id("s1", plain)
    assert stable_message_id("s2", plain, checked) != stable_message_id("s1", plain, checked)


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("abc-123", True),
        ("x" * 256, True),
        ("", False),
        ("x" * 257, False),
        ("with space", False),
        ("caf\u00e9", False),
    ],
)
def test_idempotency_key_shape(key: str, ok: bool) -> None:
    assert (idempotency_key_problem(key) is None) is ok


async def _chunks(sizes: list[int], seen: list[int]) -> AsyncIterator[bytes]:
    for size in sizes:
        seen.append(size)
        yield b"a" * size


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=20), st.integers(1, 2000))
async def test_read_limited_stops_at_the_chunk_that_passes_the_limit(
    sizes: list[int], limit: int
) -> None:
    seen: list[int] = []
    total = sum(sizes)
    if total <= limit:
        assert await read_limited(_chunks(sizes, seen), limit) == b"a" * total
    else:
        with pytest.raises(BodyTooLargeError):
            await read_limited(_chunks(sizes, seen), limit)
        assert sum(seen[:-1]) <= limit < sum(seen)  # nothing read after the limit was passed
