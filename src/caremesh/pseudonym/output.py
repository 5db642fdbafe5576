"""Output shaping: `meta.security` labels and pruning of elements left empty.

Labels follow FHIR-Tools-for-Anonymization (Shared.Core/Models/SecurityLabels.cs): codes
REDACTED, ABSTRED, CRYTOHASH, ENCRYPT, PERTURBED, SUBSTITUTED, GENERALIZED in that order
without duplicates; the first three with system v3-ObservationValue, the others without a
system, as upstream writes them. caremesh adds PSEUDED (v3-ObservationValue) for its
`pseudonymize` method, last.
"""

from __future__ import annotations

from typing import Any

LABEL_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
REDACTED, ABSTRED, CRYTOHASH, MASKED, PERTURBED, SUBSTITUTED, GENERALIZED, PSEUDED = (
    1 << n for n in range(8)
)
LABELS: tuple[tuple[int, str, str], ...] = (
    (REDACTED, "REDACTED", "redacted"),
    (ABSTRED, "ABSTRED", "abstracted"),
    (CRYTOHASH, "CRYTOHASH", "cryptographic hash function"),
    (MASKED, "ENCRYPT", "exact value is transformed into ciphertext"),
    (PERTURBED, "PERTURBED", "exact value is replaced with another exact value"),
    (SUBSTITUTED, "SUBSTITUTED", "exact value is replaced with a predefined value"),
    (GENERALIZED, "GENERALIZED", "exact value is replaced with a general value"),
    (PSEUDED, "PSEUDED", "pseudonymized"),
)


_HEAD = frozenset({"resourceType", "id"})
_WANTED: dict[int, tuple[tuple[str, str], ...]] = {}
_NO_SYSTEM = frozenset({"ENCRYPT", "PERTURBED", "SUBSTITUTED", "GENERALIZED"})
"""Labels upstream writes without a system."""


def _label(code: str, display: str) -> dict[str, str]:
    if code in _NO_SYSTEM:
        return {"code": code, "display": display}
    return {"system": LABEL_SYSTEM, "code": code, "display": display}


def _wanted(flags: int) -> tuple[tuple[str, str], ...]:
    found = _WANTED.get(flags)
    if found is None:
        found = tuple((code, display) for bit, code, display in LABELS if flags & bit)
        if len(_WANTED) < 1024:
            _WANTED[flags] = found
    return found


def add_security_labels(resource: dict[str, Any], flags: int) -> None:
    """Append the labels for `flags` to meta.security, in the fixed order, without duplicates."""
    meta = resource.get("meta")
    if type(meta) is not dict:
        meta = {}
        items = list(resource.items())
        resource.clear()
        for key, value in items:
            if key in _HEAD:
                resource[key] = value
        resource["meta"] = meta
        for key, value in items:
            if key not in _HEAD and key != "meta":
                resource[key] = value
    security = meta.get("security")
    if type(security) is not list:
        security = meta["security"] = []
    if security:
        present = {
            str(s.get("code", "")).upper() for s in security if type(s) is dict and s.get("code")
        }
        for code, display in _wanted(flags):
            if code not in present:
                security.append(_label(code, display))
    else:
        for code, display in _wanted(flags):
            security.append(_label(code, display))


def with_security_labels(resource: dict[str, Any], flags: int) -> dict[str, Any]:
    """`add_security_labels` for a resource whose first key is `resourceType`; may return a new
    dict (same content and key order as the in-place function gives) instead of reordering."""
    if "meta" in resource:
        add_security_labels(resource, flags)
        return resource
    head: dict[str, Any] = {"resourceType": resource["resourceType"]}
    if "id" in resource:
        head["id"] = resource["id"]
    head["meta"] = {"security": [_label(code, display) for code, display in _wanted(flags)]}
    head.update(resource)  # keys already in `head` keep their place
    return head


def prune_value(value: Any) -> Any:
    """A copy-free pruning of one JSON value: None when nothing but empties is left."""
    kind = type(value)
    if value is None or (kind is str and not value):
        return None
    if kind is dict:
        return value if _prune_dict(value) else None
    if kind is list:
        items = [x for x in map(prune_value, value) if x is not None]
        return items or None
    return value


def prune_aligned(obj: dict[str, Any], key: str) -> None:
    """Prune a primitive array and its `_key` extension array together, keeping them aligned."""
    values = [prune_value(v) for v in obj.get(key) or ()]
    extras = [prune_value(v) for v in obj.get("_" + key) or ()]
    extras += [None] * (len(values) - len(extras))
    values += [None] * (len(extras) - len(values))
    if not values:
        obj.pop(key, None)
        obj.pop("_" + key, None)
        return
    keep = [i for i in range(len(values)) if values[i] is not None or extras[i] is not None]
    for name, column in ((key, values), ("_" + key, extras)):
        kept = [column[i] for i in keep]
        if any(v is not None for v in kept):
            obj[name] = kept
        else:
            obj.pop(name, None)


def _prune_dict(obj: dict[str, Any]) -> bool:
    """Remove empty elements in place; whether anything but `resourceType` is left."""
    for key in list(obj):
        if key not in obj:
            continue
        value = obj[key]
        if type(value) is list:
            partner = key[1:] if key[0] == "_" else "_" + key
            if type(obj.get(partner)) is list:
                if key[0] != "_":
                    prune_aligned(obj, key)
                continue
        pruned = prune_value(value)
        if pruned is None:
            del obj[key]
        elif pruned is not value:
            obj[key] = pruned
    return len(obj) > (1 if "resourceType" in obj else 0)


def prune_resource(resource: dict[str, Any]) -> None:
    """Remove elements left empty (None, "", {}, []) anywhere in a resource, in place."""
    _prune_dict(resource)
