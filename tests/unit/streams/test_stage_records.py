"""What every patient-keyed stage is given: a consumed message as a `Record`, a clinical
record's resource decoded once, and a value that is no FHIR resource rejected before stage code."""

from __future__ import annotations

import orjson
import pytest

from caremesh.errors import RejectedInputError
from caremesh.streams.record import decode_clinical


def test_a_clinical_value_decodes_to_its_resource() -> None:
    resource = {"resourceType": "Observation", "id": "o-1", "status": "final"}
    assert decode_clinical(orjson.dumps(resource)) == resource


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"{", "invalid-json"),
        (b"", "invalid-json"),
        (None, "invalid-json"),
        (b"[1]", "invalid-record"),
    ],
)
def test_a_clinical_value_that_is_no_resource_is_rejected(value: bytes | None, code: str) -> None:
    with pytest.raises(RejectedInputError) as caught:
        decode_clinical(value)
    assert caught.value.code == code
    assert caught.value.detail.startswith("clinical record is not")  # never the value
