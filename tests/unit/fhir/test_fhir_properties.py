"""Properties: any input ends in records or a rejection value; HL7 input fails only one way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from caremesh.errors import InvalidHl7Error
from caremesh.fhir.hl7v2 import build_ack, parse_hl7
from caremesh.fhir.hl7v2_map import map_hl7v2
from caremesh.fhir.ingest import REJECTION_CODES as ERROR_CODES
from caremesh.fhir.ingest import process_ingest

DATA = Path(__file__).parents[2] / "data" / "hl7"
SECRET = "ZZSYNTHSECRET"
KNOWN_CODES = {*ERROR_CODES, "unsupported-bundle-type"}
RESOURCE_TYPES = ["Patient", "Observation", "Bundle", "Encounter", "Consent", "Address", "Foo"]
ELEMENTS = [
    "id",
    "status",
    "code",
    "subject",
    "entry",
    "resource",
    "contained",
    "resourceType",
    "name",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([*RESOURCE_TYPES, "final", "transaction", "Patient/p1", SECRET]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(ELEMENTS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=30,
)
resources = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(RESOURCE_TYPES)},
    optional={
        "id": st.text(max_size=10),
        "type": st.sampled_from(["transaction", "batch", "collection", "document", "searchset"]),
        "entry": st.lists(
            st.fixed_dictionaries({}, optional={"resource": json_values}), max_size=3
        ),
        "subject": json_values,
        "status": json_values,
        "code": json_values,
    },
)


def check_result(body: bytes, hint: str | None) -> None:
    result = process_ingest(body, "synth-src", "m-1", hint, {})
    if result.rejection is None:
        for record in result.records:
            assert isinstance(orjson.loads(record.value), dict)
            assert record.key
    else:
        assert result.records == ()
        assert result.rejection.code in KNOWN_CODES
        assert SECRET not in result.rejection.detail


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, hint=st.sampled_from([None, "R4", "R5", "R4B", "DSTU2"]))
@example(value={"resourceType": "Patient", "contained": [{"resourceType": "Foo"}]}, hint=None)
@example(value={"resourceType": "Patient", "contained": [{"resourceType": 5}]}, hint="R5")
def test_any_json_gives_a_result_or_a_rejection(value: Any, hint: str | None) -> None:
    check_result(orjson.dumps(value), hint)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=resources, hint=st.sampled_from([None, "R4", "R5"]))
def test_resource_shaped_json_gives_a_result_or_a_rejection(
    value: dict[str, Any], hint: str | None
) -> None:
    check_result(orjson.dumps(value), hint)


@settings(max_examples=200)
@given(body=st.binary(max_size=200))
def test_any_bytes_give_a_result_or_a_rejection(body: bytes) -> None:
    check_result(body, None)


def _sample_lines() -> list[str]:
    text = b"".join(p.read_bytes() for p in sorted(DATA.glob("*.hl7"))).decode("latin-1")
    return [line for line in text.split("\r") if line]


hl7_like = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=200).map(lambda tail: b"MSH|^~\\&|" + tail),
    st.lists(st.sampled_from(_sample_lines()), min_size=1, max_size=8).map(
        lambda lines: "\r".join(lines).encode("latin-1")
    ),
    st.tuples(st.sampled_from(_sample_lines()), st.text(max_size=40)).map(
        lambda pair: ("MSH|^~\\&|A|B|C|D|2024||ORU^R01|X|P|2.5\r" + pair[0] + pair[1]).encode()
    ),
)


@settings(max_examples=400)
@given(raw=hl7_like)
def test_hl7_input_raises_only_invalid_hl7(raw: bytes) -> None:
    try:
        parse_hl7(raw)
        body = map_hl7v2(raw)
    except InvalidHl7Error:
        pass
    else:
        assert body["resourceType"] == "Bundle"
    assert build_ack(raw, "AR", "x").startswith(b"MSH")
