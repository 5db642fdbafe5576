"""A faster `reject_null_complex_elements` for fhir_core 1.1.12 (under fhir.resources 8.3.0).

fhir_core checks every model instance, nested elements included, for a null inside a list of
complex elements. Its check walks all of the model's fields on every call and asks, for each,
whether the field is a list and whether it is primitive. That walk was about 30 % of the CPU of
validating a resource (docs/bench/README.md). This version asks once per model class and keeps
the names of the complex list fields; the check itself and its errors are the same (the test
compares both on every field of the common resource types).

`install()` must run before fhir.resources builds a model class: pydantic binds a model
validator when it builds the class. A class built before keeps the original check, which is
slower but gives the same answers. The fix is applied only to the fhir_core version it was
written for; with any other version, validation runs fhir_core's own code.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from fhir_core import fhirabstractmodel
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

log = logging.getLogger(__name__)

FOR_VERSION: Final = "1.1.12"

ORIGINAL: Final = vars(fhirabstractmodel.FHIRAbstractModel).get("reject_null_complex_elements")
"""fhir_core's own check (a classmethod), kept for comparison."""

_COMPLEX_LISTS: dict[type, tuple[tuple[str, str | None], ...]] = {}


def complex_list_fields(cls: Any) -> tuple[tuple[str, str | None], ...]:
    """(name, alias) of each field of `cls` that is a list of complex elements."""
    found = _COMPLEX_LISTS.get(cls)
    if found is None:
        found = _COMPLEX_LISTS[cls] = tuple(
            (name, field.alias)
            for name, field in cls.model_fields.items()
            # `<name>__ext` lists are the extension siblings of primitive arrays; their nulls
            # are positional placeholders and stay, as primitive lists keep theirs.
            if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext")
        )
    return found


def reject_null_complex_elements(cls: Any, data: Any) -> Any:
    """A null inside a list of complex types has no meaning in FHIR (fhir_core's rule)."""
    if not isinstance(data, dict):
        return data
    errors: list[InitErrorDetails] = []
    for name, alias in complex_list_fields(cls):
        key = alias if alias and alias in data else name
        value = data.get(key)
        if isinstance(value, list) and any(item is None for item in value):
            errors.append(
                {
                    "type": PydanticCustomError(
                        "list_type", "None is not allowed as an element of {field}", {"field": key}
                    ),
                    "loc": (key,),
                    "input": value,
                }
            )
    if errors:
        raise ValidationError.from_exception_data(cls.__name__, errors)
    return data


def install() -> bool:
    """Put the faster check in place for model classes built from now on; True if it is."""
    base = fhirabstractmodel.FHIRAbstractModel
    try:
        installed = version("fhir_core")
    except PackageNotFoundError:
        installed = None
    if installed != FOR_VERSION:
        log.debug("fhir_core is not %s: its own null-element check stays", FOR_VERSION)
        return False
    if ORIGINAL is None:
        return False
    base.reject_null_complex_elements = classmethod(reject_null_complex_elements)  # type: ignore[method-assign,assignment]
    return True


INSTALLED: Final = install()
