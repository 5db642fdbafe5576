"""The golden Patient: one person's merged description, as a master patient index keeps it.

Every source (a FHIR Patient, the PID of an HL7 v2 ADT or ORU mapped to FHIR R4) describes the
person with some elements; recipients receive the union, so that a thinner description never
erases a fuller one (an ORU's PID carries no maiden name or address: the ADT's stay). The merge
of a newer description `new` into the record `old` (both in their recipient form,
`recipient_ids.for_recipients`), element by element of FHIR R4 `Patient`:

- an element `new` does not have is kept from `old` (nothing is erased by absence);
- a single-valued element `new` has replaces `old`'s (newer wins), and a choice element
  (`deceased[x]`, `multipleBirth[x]`) replaces every variant of it;
- a repeating element is merged entry by entry: an entry of `new` is merged into the entry of
  `old` with the same key (its sub-elements the same way: what `new` lacks is kept, a list of
  strings that `old`'s already contains, such as the one given name of an ORU's PID-5 against
  the ADT's two, is thinner and keeps `old`'s), other entries of `old` are kept, new keys are
  appended. Keys:
  `identifier` (system, value), `name` (use), `address` (use, type), `telecom` (system, use),
  `extension` / `modifierExtension` (url), `generalPractitioner` / `link` (reference), anything
  else the whole entry;
- `meta.security` is the union of the labels (a restriction is never dropped); `text` (the
  narrative of one source) is not kept, it would describe only part of the record.

"Newer" is the order the share stage reads the records in (per patient, the order of
clinical.fhir.v1). The merge is pure and deterministic: the same descriptions in the same order
give the same record, so a replay rebuilds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

_CHOICES: Final = ("deceased", "multipleBirth")
_FIXED: Final = frozenset({"resourceType", "id"})


def _get(entry: object, *names: str) -> object:
    if not isinstance(entry, Mapping):
        return repr(entry)
    return tuple(repr(entry.get(n)) for n in names)


def _whole(entry: object) -> object:
    return repr(entry)


_KEYS: Final[Mapping[str, Callable[[object], object]]] = {
    "identifier": lambda e: _get(e, "system", "value"),
    "name": lambda e: _get(e, "use"),
    "address": lambda e: _get(e, "use", "type"),
    "telecom": lambda e: _get(e, "system", "use"),
    "extension": lambda e: _get(e, "url"),
    "modifierExtension": lambda e: _get(e, "url"),
    "generalPractitioner": lambda e: _get(e, "reference"),
    "link": lambda e: _get(e, "other"),
}


def _merge_list(name: str, old: list[Any], new: list[Any]) -> list[Any]:
    key = _KEYS.get(name, _whole)
    out = list(old)
    index = {key(e): i for i, e in enumerate(out)}
    for entry in new:
        k = key(entry)
        if k in index:
            out[index[k]] = _merge_entry(out[index[k]], entry)
        else:
            index[k] = len(out)
            out.append(entry)
    return out


def _merge_entry(old: object, new: object) -> object:
    """One element of the same key: sub-elements merged, a thinner list of strings kept."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**old, **{k: _merge_entry(old.get(k), v) for k, v in new.items()}}
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(v, str) for v in new)
        and set(new) <= set(old)
    ):
        return old
    return new


def _merge_meta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = {**old, **new}
    security = _merge_list(
        "security",
        list(old.get("security") or []),
        list(new.get("security") or []),
    )
    if security:
        out["security"] = security
    return out


def merge_patient(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The golden record after `new` (see the module docstring); `old` None: the first one."""
    if old is None:
        return {k: v for k, v in new.items() if k != "text"}
    out: dict[str, Any] = {k: v for k, v in old.items() if k != "text"}
    for name, value in new.items():
        if name == "text" or (name in _FIXED and name in out):
            continue
        choice = next((c for c in _CHOICES if name.startswith(c)), None)
        if choice is not None:
            for other in [k for k in out if k.startswith(choice)]:
                del out[other]
            out[name] = value
        elif name == "meta" and isinstance(value, Mapping) and isinstance(out.get(name), Mapping):
            out[name] = _merge_meta(out[name], value)
        elif isinstance(value, list) and isinstance(out.get(name), list):
            out[name] = _merge_list(name, out[name], value)
        else:
            out[name] = value
    return out
