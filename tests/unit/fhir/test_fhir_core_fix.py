"""The faster null-element check gives fhir_core's answers, and validation uses it."""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Any

import pytest
from fhir.resources import get_fhir_model_class as r5_model_class
from fhir.resources.R4B import get_fhir_model_class as r4b_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from pydantic import ValidationError

from caremesh.fhir import fhir_core_fix
from caremesh.fhir.validate import COMMON_TYPES, model_class, validate_resource


def _original(cls: Any, data: Any) -> Any:
    """fhir_core's own check, whichever function is installed now."""
    return fhir_core_fix.ORIGINAL.__func__(cls, data)


def _outcome(check: Any, cls: Any, data: Any) -> object:
    try:
        return ("accepted", check(cls, data))
    except ValidationError as exc:
        return ("refused", exc.errors(include_url=False, include_input=False))


def _referenced(cls: Any) -> list[Any]:
    """The model classes the fields of `cls` name (fhir_core annotates them as `abc.<X>Type`)."""
    lookup = r4b_model_class if ".R4B." in cls.__module__ else r5_model_class
    found = []
    for field in cls.model_fields.values():
        for name in re.findall(r"abc\.(\w+)Type\b", repr(field.annotation)):
            klass = getattr(sys.modules[cls.__module__], name, None)
            if klass is None:
                with contextlib.suppress(Exception):
                    klass = lookup(name)
            if isinstance(klass, type) and issubclass(klass, FHIRAbstractModel):
                found.append(klass)
    return found


def _models() -> list[Any]:
    """The common resource models and every model their elements refer to, transitively."""
    seen: dict[str, Any] = {}
    todo = [model_class(t, f) for t in COMMON_TYPES for f in ("R4B", "R5")]
    while todo:
        cls = todo.pop()
        if cls is None or f"{cls.__module__}.{cls.__name__}" in seen:
            continue
        seen[f"{cls.__module__}.{cls.__name__}"] = cls
        todo += _referenced(cls)
    return list(seen.values())


def test_the_fix_is_installed_and_used_by_the_models() -> None:
    assert fhir_core_fix.INSTALLED
    observation = model_class("Observation", "R4B")
    bound = observation.__pydantic_decorators__.model_validators["reject_null_complex_elements"]
    assert bound.func.__func__ is fhir_core_fix.reject_null_complex_elements


def test_same_answers_as_fhir_core_for_a_null_in_every_list_field() -> None:
    """Each list field of each model gets a null among values (and then only values): both
    checks accept or refuse alike, with the same error locations and types."""
    models = _models()
    assert len(models) > 100
    compared = 0
    for cls in models:
        for name, field in cls.model_fields.items():
            key = field.alias or name
            for value in ([{}, None], [None], [{}], "not a list", None):
                for data in ({key: value}, {name: value, "id": "x"}):
                    ours = _outcome(fhir_core_fix.reject_null_complex_elements, cls, data)
                    assert ours == _outcome(_original, cls, data), (cls.__name__, name, value)
                    compared += 1
    assert compared > 10_000
    assert _outcome(_original, cls, None) == _outcome(
        fhir_core_fix.reject_null_complex_elements, cls, None
    )


@pytest.mark.parametrize("release", ["R4B", "R5"])
def test_validation_refuses_a_null_complex_element_and_keeps_primitive_placeholders(
    release: str,
) -> None:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": "Synthetic", "given": ["Ana", None]}],
    }
    patient["name"][0]["_given"] = [None, {"extension": [{"url": "urn:x", "valueString": "y"}]}]
    assert validate_resource(patient, release).resource_type == "Patient"

    nested = {"resourceType": "Observation", "status": "final", "code": {"coding": [None]}}
    with pytest.raises(Exception, match=r"code\.coding \(list_type\)"):
        validate_resource(nested, release)
    top = {"resourceType": "Patient", "identifier": [{"value": "1"}, None]}
    with pytest.raises(Exception, match=r"identifier \(list_type\)"):
        validate_resource(top, release)
