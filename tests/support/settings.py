"""Test support: settings are frozen; a test changes some by making a changed copy."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def evolve(model: M, **changes: Any) -> M:
    """A copy of a (frozen) settings model with `changes`; a `section__field` key changes a field
    of a section (`kafka__topic_prefix="t."`), deeper keys likewise."""
    flat: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        head, sep, rest = key.partition("__")
        if sep:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    for head, sub in nested.items():
        flat[head] = evolve(getattr(model, head), **sub)
    return model.model_copy(update=flat)
