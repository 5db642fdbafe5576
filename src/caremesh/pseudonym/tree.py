"""A flat, typed index of one FHIR resource's JSON tree, with node identity for the rule engine.

Nodes follow the FHIR element model, not the JSON shape: every item of a JSON array is a node
named after its element (`name[0]` and `name[1]` are two `name` nodes), a choice element is
named by its base name (`valueQuantity` is node `value` of type `Quantity`), and the `_x`
object of a primitive (its `id` and `extension`) hangs below node `x`. Nodes are numbered in
document order (pre-order); `end[i]` is one past the last node of `i`'s subtree, so "node
`i` and everything below it" is the range `i .. end[i]-1`.

Nested resources (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`) are
leaf nodes here: they are indexed and processed as resources of their own.
"""

from __future__ import annotations

from typing import Any

from caremesh.pseudonym.elements import (
    PRIMITIVE_EXTENSION_KEY,
    UNKNOWN_TYPE,
    ElementInfo,
    children_of,
    resource_type_key,
)

_UNKNOWN: dict[str, ElementInfo] = {}


def _unknown(key: str) -> ElementInfo:
    info = _UNKNOWN.get(key)
    if info is None:
        info = _UNKNOWN[key] = ElementInfo(key, UNKNOWN_TYPE, None)
    return info


class NodeIndex:
    """The nodes of one resource; node 0 is the resource itself."""

    __slots__ = (
        "by_name",
        "by_type",
        "cont",
        "end",
        "field",
        "ftype",
        "key",
        "name",
        "nested",
        "nested_set",
        "parent",
        "preference",
        "resource_type",
        "root",
        "visited",
    )

    def __init__(self, root: dict[str, Any], preference: tuple[str, ...]) -> None:
        self.root = root
        self.preference = preference
        self.resource_type: str = root["resourceType"]
        self.cont: list[Any] = [None]
        self.key: list[Any] = [None]
        self.field: list[str] = [""]
        self.name: list[str] = [self.resource_type]
        self.ftype: list[str] = [self.resource_type]
        self.parent: list[int] = [-1]
        self.end: list[int] = [0]
        self.nested: list[int] = []
        self.nested_set: set[int] = set()
        self.by_type: dict[str, list[int]] = {}
        self.by_name: dict[str, list[int]] = {}
        self._walk(root, resource_type_key(self.resource_type), 0)
        self.end[0] = len(self.cont)
        self.visited = bytearray(len(self.cont))

    def get(self, i: int) -> Any:
        """The current JSON value of node `i` (None once removed)."""
        if i == 0:
            return self.root
        cont = self.cont[i]
        if type(cont) is dict:
            return cont.get(self.key[i])
        return cont[self.key[i]]

    def set(self, i: int, value: Any) -> None:
        """Replace the JSON value of node `i` (None marks it removed)."""
        self.cont[i][self.key[i]] = value

    def is_nested_resource(self, i: int) -> bool:
        """Whether node `i` is a resource nested in this one."""
        return i in self.nested_set

    def path_of(self, i: int) -> str:
        """The element path of node `i` (`Patient.contact.name.given`), for error coordinates."""
        names: list[str] = []
        while i > 0:
            names.append(self.name[i])
            i = self.parent[i]
        names.append(self.resource_type)
        return ".".join(reversed(names))

    def _add(self, cont: Any, key: Any, field: str, info: ElementInfo, parent: int) -> int:
        i = len(self.cont)
        self.cont.append(cont)
        self.key.append(key)
        self.field.append(field)
        self.name.append(info.name)
        self.ftype.append(info.fhir_type)
        self.parent.append(parent)
        self.end.append(i + 1)
        by_type = self.by_type.get(info.fhir_type)
        if by_type is None:
            self.by_type[info.fhir_type] = [i]
        else:
            by_type.append(i)
        by_name = self.by_name.get(info.name)
        if by_name is None:
            self.by_name[info.name] = [i]
        else:
            by_name.append(i)
        return i

    def _item(
        self, cont: Any, key: Any, field: str, value: Any, ext: Any, info: ElementInfo, parent: int
    ) -> None:
        if type(value) is dict:
            nested_type = value.get("resourceType")
            if info.is_resource and isinstance(nested_type, str):
                i = self._add(cont, key, field, ElementInfo(field, nested_type, None), parent)
                self.ftype[i] = nested_type
                self.nested.append(i)
                self.nested_set.add(i)
                return
            i = self._add(cont, key, field, info, parent)
            if info.type_key is not None:
                self._walk(value, info.type_key, i)
            else:
                self._walk_untyped(value, i)
        else:
            i = self._add(cont, key, field, info, parent)
        if type(ext) is dict:
            self._walk(ext, PRIMITIVE_EXTENSION_KEY, i)
        self.end[i] = len(self.cont)

    def _walk(self, obj: dict[str, Any], type_key: str, parent: int) -> None:
        table = children_of(type_key, self.preference)
        for field, value in obj.items():
            if field[0] == "_":
                base = field[1:]
                if base not in obj and base:
                    self._orphan_extension(obj, base, value, table, parent)
                continue
            if field == "resourceType":
                continue
            info = table.get(field) or _unknown(field)
            ext = obj.get("_" + field)
            if type(value) is list:
                ext_list = ext if type(ext) is list else None
                for idx, item in enumerate(value):
                    item_ext = ext_list[idx] if ext_list is not None and idx < len(ext_list) else None
                    self._item(value, idx, field, item, item_ext, info, parent)
            else:
                self._item(obj, field, field, value, ext, info, parent)

    def _walk_untyped(self, obj: dict[str, Any], parent: int) -> None:
        for field, value in obj.items():
            if field[0] == "_" or field == "resourceType":
                continue
            info = _unknown(field)
            if type(value) is list:
                for idx, item in enumerate(value):
                    self._item(value, idx, field, item, None, info, parent)
            else:
                self._item(obj, field, field, value, None, info, parent)

    def _orphan_extension(
        self,
        obj: dict[str, Any],
        base: str,
        value: Any,
        table: dict[str, ElementInfo],
        parent: int,
    ) -> None:
        """A `_x` without its `x`: a primitive node with no value that carries extensions."""
        info = table.get(base) or _unknown(base)
        items = value if type(value) is list else [value]
        holder: list[Any] = [None] * len(items)
        for idx, item in enumerate(items):
            self._item(holder, idx, base, None, item, info, parent)
