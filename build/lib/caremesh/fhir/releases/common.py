"""Shared pieces of the release rules: the refusal, and moves between R4 and R5 shapes."""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


class Refused(Exception):  # noqa: N818 - a decision carried out of a rule, caught by convert
    """No faithful conversion: the reason code and the element path (never a value)."""

    def __init__(self, reason_code: str, element: str) -> None:
        super().__init__(reason_code)
        self.reason_code = reason_code
        self.element = element


def take_primitive(res: Json, name: str, path: str) -> Any:
    """Remove and return element `name`; refuse if it is a primitive with an extension."""
    if f"_{name}" in res:
        raise Refused("primitive-extension", f"{path}.{name}")
    return res.pop(name, None)


def rename(res: Json, old: str, new: str) -> None:
    if old in res:
        res[new] = res.pop(old)
    if f"_{old}" in res:
        res[f"_{new}"] = res.pop(f"_{old}")


def translate_code(res: Json, name: str, path: str, table: dict[str, str | None]) -> None:
    """Translate a required-binding code with a ConceptMap table (None: no target)."""
    value = res.get(name)
    if value is None:
        return
    mapped = table.get(value, value) if isinstance(value, str) else value
    if mapped is None:
        raise Refused("no-equivalent-code", f"{path}.{name}")
    res[name] = mapped


def as_concepts(items: list[Any]) -> list[Json]:
    return [{"concept": c} for c in items]


def as_references(items: list[Any]) -> list[Json]:
    return [{"reference": r} for r in items]


def split_codeable_references(items: list[Any], path: str) -> tuple[list[Any], list[Any]]:
    """R5 CodeableReference list → (concepts, references); one holding both is refused."""
    concepts: list[Any] = []
    refs: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or ("concept" in item and "reference" in item):
            raise Refused("cardinality", f"{path}[{index}]")
        if "concept" in item:
            concepts.append(item["concept"])
        if "reference" in item:
            refs.append(item["reference"])
        if set(item) - {"concept", "reference"}:
            raise Refused("no-equivalent-element", f"{path}[{index}]")
    return concepts, refs


def reason_up(res: Json, path: str, code: str = "reasonCode", ref: str = "reasonReference") -> None:
    reason = as_concepts(res.pop(code, None) or []) + as_references(res.pop(ref, None) or [])
    if reason:
        res["reason"] = reason


def reason_down(
    res: Json, path: str, code: str = "reasonCode", ref: str = "reasonReference"
) -> None:
    concepts, refs = split_codeable_references(res.pop("reason", None) or [], f"{path}.reason")
    if concepts:
        res[code] = concepts
    if refs:
        res[ref] = refs


def single(items: Any, path: str) -> Any:
    """The only item of a list, refusing more than one."""
    if not isinstance(items, list):
        return items
    if len(items) > 1:
        raise Refused("cardinality", path)
    return items[0] if items else None


def _reference_type(ref: Any) -> str | None:
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or text.startswith("#") or "/" not in text:
        return None
    return text.rstrip("/").split("/")[-2]


def allow_targets(ref: Any, allowed: frozenset[str], path: str) -> None:
    found = _reference_type(ref)
    declared = ref.get("type") if isinstance(ref, dict) else None
    for rtype in (found, declared):
        if rtype is not None and rtype not in allowed:
            raise Refused("reference-target", path)
