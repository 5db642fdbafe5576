"""Fuzzing the pure input cores (issue 9, item 7): the validate stage's `process_ingest` and the
HL7 v2 → FHIR mapping answer every input with a clean rejection or a valid result, never
another exception."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caremesh.errors import RejectedInputError
from caremesh.fhir.hl7v2_map import map_hl7v2
from caremesh.fhir.ingest import process_ingest
from tests.unit.connectors.connectors_synth import hl7

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
INS = "urn:oid:1.2.250.1.213.1.4.8"
TYPES = ["Observation", "Patient", "Condition", "Encounter", "Bundle", "CareTeam", "Nope", ""]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["2026-03-02", "2026-13-45T99:00:00Z", "1e400", INS, "Patient/1", "final"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "status",
                    "code",
                    "subject",
                    "identifier",
                    "value",
                    "system",
                    "entry",
                    "resource",
                    "type",
                    "reference",
                    "valueQuantity",
                    "effectiveDateTime",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@st.composite
def fhir_like(draw: st.DrawFn) -> dict[str, Any]:
    """A resource-shaped object: a resource type, an id, a subject, then arbitrary elements."""
    resource: dict[str, Any] = {"resourceType": draw(st.sampled_from(TYPES))}
    if draw(st.booleans()):
        resource["id"] = draw(st.text(max_size=70))
    if draw(st.booleans()):
        resource["subject"] = {"identifier": {"system": INS, "value": draw(st.text(max_size=15))}}
    if resource["resourceType"] == "Bundle":
        resource["type"] = draw(
            st.sampled_from(["batch", "transaction", "collection", "searchset"])
        )
        resource["entry"] = draw(
            st.lists(st.builds(lambda r: {"resource": r}, json_values), max_size=3)
        )
    resource.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=5)))
    return resource


def _ingest(value: bytes) -> None:
    result = process_ingest(value, "hosp-fuzz", "m-1", None, {})
    if result.rejection is None:
        for record in result.records:
            assert record.key
            orjson.loads(record.value)
    else:
        assert result.rejection.code


@FUZZ
@given(fhir_like())
def test_validate_never_crashes_on_fhir_like_resources(resource: dict[str, Any]) -> None:
    _ingest(json.dumps(resource).encode())  # stdlib: integers beyond 64 bits too


@FUZZ
@given(st.binary(max_size=300))
def test_validate_never_crashes_on_arbitrary_bytes(value: bytes) -> None:
    _ingest(value)


segment_text = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\r\x0b\x1c"), max_size=60
)


@st.composite
def hl7_like(draw: st.DrawFn) -> bytes:
    """A valid synthetic message with segments replaced, added or mangled."""
    kind = draw(st.sampled_from(["ADT^A01", "ADT^A03", "ADT^A08", "ORU^R01"]))
    segments = hl7(kind, draw(st.text(min_size=1, max_size=12))).decode("latin-1").split("\r")
    segments = [s for s in segments if s]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(["PID", "PV1", "OBX", "OBR", "EVN", "NTE", "ZZZ"]))
        fields = draw(st.lists(segment_text, max_size=20))
        segment = "|".join([name, *fields])
        if draw(st.booleans()) and len(segments) > 1:
            segments[draw(st.integers(1, len(segments) - 1))] = segment
        else:
            segments.append(segment)
    return ("\r".join(segments) + "\r").encode("latin-1")


def _map(raw: bytes) -> None:
    try:
        bundle = map_hl7v2(raw)
    except RejectedInputError as exc:
        code = exc.code
    else:
        code = ""
    if code:
        return
    assert bundle["resourceType"] == "Bundle"
    orjson.dumps(bundle)


@FUZZ
@given(hl7_like())
def test_hl7_mapping_never_crashes_on_mangled_messages(raw: bytes) -> None:
    _map(raw)


@FUZZ
@given(st.binary(max_size=300))
def test_hl7_mapping_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    _map(raw)
