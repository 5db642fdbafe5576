"""FHIR element types for the rule engine, read from the fhir.resources (R4B and R5) models.

R4-only resources (MedicinalProduct and its siblings, which R4B replaced) are typed from the R4
model fhirpathpy ships, see `R4_ONLY_PREFIX`.

The table answers "which FHIR type is JSON key `k` of a node of type `t`" for `nodesByType`,
`as`/`ofType` casts and type-specific methods (dates, postal codes, ages). It is derived from
the models' pydantic field metadata (`json_schema_extra["element_property"]`, the
`one_of_many` choice marker, `Annotated[..., <primitive>]` with its `__visit_name__`, and the
`_model_klass` of complex types), never guessed from JSON values. Types are looked up lazily
and cached per (release preference, type key).

A type key names a model class without its release package: `patient.Patient`,
`patient.PatientContact`, `address.Address`. Choice elements resolve from the JSON key
(`valueQuantity` → element `value`, type `Quantity`).
"""

from __future__ import annotations

import decimal
import importlib
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Release = str
"""A fhir.resources release package: "R5" or "R4B" (R4 JSON is read with the R4B models)."""

_PACKAGES: dict[Release, str] = {"R5": "fhir.resources", "R4B": "fhir.resources.R4B"}
RELEASE_PREFERENCES: dict[str, tuple[Release, ...]] = {
    "R5": ("R5", "R4B"),
    "R4B": ("R4B", "R5"),
    "R4": ("R4B", "R5"),
}
DEFAULT_PREFERENCE: tuple[Release, ...] = ("R5", "R4B")
PRIMITIVE_EXTENSION_KEY = "element.Element"
"""Type key of the `_x` object that carries a primitive's `id` and `extension`."""

_PRIMITIVE_PARENTS: dict[str, str] = {
    "code": "string",
    "id": "string",
    "markdown": "string",
    "canonical": "uri",
    "url": "uri",
    "oid": "uri",
    "uuid": "uri",
    "positiveInt": "integer",
    "unsignedInt": "integer",
}
_PLAIN_TYPES: dict[Any, str] = {
    bool: "boolean",
    str: "string",
    int: "integer",
    float: "decimal",
    decimal.Decimal: "decimal",
}


@dataclass(frozen=True, slots=True)
class ElementInfo:
    """One element of a FHIR type: its name, FHIR type and (for complex types) type key."""

    name: str
    fhir_type: str
    type_key: str | None
    is_resource: bool = False
    repeats: bool = False
    """Whether the element is a list in FHIR JSON (max cardinality *)."""


UNKNOWN_TYPE = ""


def resource_type_key(resource_type: str) -> str:
    """The type key of a resource type name (`Patient` → `patient.Patient`)."""
    return f"{resource_type.lower()}.{resource_type}"


def _load_class(release: Release, type_key: str) -> Any | None:
    module_name, _, class_name = type_key.partition(".")
    try:
        module = importlib.import_module(f"{_PACKAGES[release]}.{module_name}")
    except ImportError:
        return None
    return getattr(module, class_name, None)


def _is_named_type(klass: Any) -> bool:
    """Whether a model class is a named FHIR type (its module is named after it)."""
    return bool(klass.__module__.rsplit(".", 1)[-1] == klass.__name__.lower())


def _class_type_name(klass: Any) -> str:
    if _is_named_type(klass):
        return str(klass.__name__)
    names = {base.__name__ for base in klass.__mro__}
    return "BackboneElement" if "BackboneElement" in names else "Element"


def _repeats(annotation: Any) -> bool:
    """Whether a field annotation is a list (under Optional/Union wrappers)."""
    current = annotation
    for _ in range(8):
        origin = typing.get_origin(current)
        if origin is list:
            return True
        if origin is typing.Union or origin is types.UnionType:
            current = next(a for a in typing.get_args(current) if a is not type(None))
        else:
            return False
    return False


def _resolve(annotation: Any, release: Release) -> tuple[str, str | None, bool]:
    """(FHIR type, type key or None for primitives, is a resource slot) of a field annotation."""
    current = annotation
    for _ in range(8):
        origin = typing.get_origin(current)
        if origin is typing.Union or origin is types.UnionType:
            current = next(a for a in typing.get_args(current) if a is not type(None))
        elif origin is list:
            current = typing.get_args(current)[0]
        elif origin is typing.Annotated:
            base, *metadata = typing.get_args(current)
            for item in metadata:
                visit_name = getattr(item, "__visit_name__", None)
                if isinstance(visit_name, str):
                    return visit_name, None, False
            current = base
        else:
            break
    if current in _PLAIN_TYPES:
        return _PLAIN_TYPES[current], None, False
    dotted = getattr(current, "_model_klass", None)
    if isinstance(dotted, str):
        module_path, _, class_name = dotted.rpartition(".")
        type_key = f"{module_path.rsplit('.', 1)[-1]}.{class_name}"
        klass = _load_class(release, type_key)
        if klass is None:
            return UNKNOWN_TYPE, None, False
        name = _class_type_name(klass)
        return name, type_key, name in ("Resource", "DomainResource")
    return UNKNOWN_TYPE, None, False


R4_ONLY_PREFIX = "r4:"
"""Type keys of R4 resources and backbone elements fhir.resources lacks (`r4:<element path>`),
typed from the R4 model fhirpathpy ships (`path2Type`, `choiceTypePaths`; FHIR R4 4.0.1)."""


def _r4_model() -> dict[str, Any]:
    from fhirpathpy.models import models  # noqa: PLC0415 - JSON models, loaded on first use

    model: dict[str, Any] = models["r4"]
    return model


def _r4_only_resource(resource_type: str) -> bool:
    """Whether R4 defines a resource type that neither fhir.resources release has."""
    return _r4_model()["type2Parent"].get(resource_type) in ("DomainResource", "Resource")


def _r4_children(path: str) -> dict[str, ElementInfo]:
    """The children of an R4 element path from fhirpathpy's R4 model (no cardinalities)."""
    model = _r4_model()
    types_of: dict[str, str] = model["path2Type"]
    choices: dict[str, list[str]] = model["choiceTypePaths"]
    elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
    prefix = path + "."
    table: dict[str, ElementInfo] = {}
    for full in types_of:
        if not full.startswith(prefix):
            continue
        key = full[len(prefix) :].split(".", 1)[0]
        if key in table:
            continue
        child = prefix + key
        fhir_type = types_of.get(child)
        name = key
        if fhir_type is None:  # a backbone element: only its children are listed
            target = elsewhere.get(child, child)
            table[key] = ElementInfo(name, "BackboneElement", R4_ONLY_PREFIX + target)
            continue
        for base in (key[:n] for n in range(len(key) - 1, 0, -1)):
            if prefix + base in choices and key[len(base) :] in choices[prefix + base]:
                name = base
                break
        if fhir_type == "System.String":
            fhir_type = "string"
        if fhir_type == "Resource":
            table[key] = ElementInfo(name, fhir_type, "resource.Resource", is_resource=True)
        elif fhir_type[0].isupper():
            table[key] = ElementInfo(name, fhir_type, f"{fhir_type.lower()}.{fhir_type}")
        else:
            table[key] = ElementInfo(name, fhir_type, None)
    return table


@lru_cache(maxsize=4096)
def children_of(type_key: str, preference: tuple[Release, ...]) -> dict[str, ElementInfo]:
    """JSON key → element of a type, from the first release in `preference` that defines it
    (an R4-only resource, such as MedicinalProduct, from the R4 model: `R4_ONLY_PREFIX`)."""
    table: dict[str, ElementInfo] = {}
    if type_key.startswith(R4_ONLY_PREFIX):
        return _r4_children(type_key[len(R4_ONLY_PREFIX) :])
    module_name, _, class_name = type_key.partition(".")
    if (
        module_name == class_name.lower()
        and _r4_only_resource(class_name)
        and not any(_load_class(release, type_key) for release in preference)
    ):
        return _r4_children(class_name)
    for release in preference:
        klass = _load_class(release, type_key)
        if klass is None:
            continue
        for field in klass.model_fields.values():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or not extra.get("element_property"):
                continue
            alias = field.alias
            if not alias or alias in table:
                continue
            fhir_type, child_key, is_resource = _resolve(field.annotation, release)
            choice = extra.get("one_of_many")
            name = choice if isinstance(choice, str) else alias
            repeats = _repeats(field.annotation)
            table[alias] = ElementInfo(name, fhir_type, child_key, is_resource, repeats)
    return table


@lru_cache(maxsize=1024)
def type_family(fhir_type: str) -> frozenset[str]:
    """A type and its ancestors (`Age` → Age, Quantity, ...; `code` → code, string)."""
    if not fhir_type:
        return frozenset()
    family = {fhir_type}
    parent = _PRIMITIVE_PARENTS.get(fhir_type)
    if parent:
        family.add(parent)
    if fhir_type[0].isupper():
        for release in DEFAULT_PREFERENCE:
            klass = _load_class(release, f"{fhir_type.lower()}.{fhir_type}")
            if klass is not None:
                family.update(
                    b.__name__
                    for b in klass.__mro__
                    if b.__module__.startswith("fhir.resources") and _is_named_type(b)
                )
                break
    return frozenset(family)


@lru_cache(maxsize=1024)
def known_resource_type(resource_type: str) -> bool:
    """Whether either release defines this resource type, or R4 does (`R4_ONLY_PREFIX`)."""
    return any(
        _load_class(release, resource_type_key(resource_type)) is not None
        for release in DEFAULT_PREFERENCE
    ) or _r4_only_resource(resource_type)


def preference_for(fhir_version: str | None) -> tuple[Release, ...]:
    """The release lookup order for a rule file's `fhirVersion` (None: R5 first)."""
    if not fhir_version:
        return DEFAULT_PREFERENCE
    return RELEASE_PREFERENCES[fhir_version]


__all__ = [
    "PRIMITIVE_EXTENSION_KEY",
    "UNKNOWN_TYPE",
    "ElementInfo",
    "children_of",
    "known_resource_type",
    "preference_for",
    "resource_type_key",
    "type_family",
]
