"""SQL on FHIR v2 ViewDefinitions: read, validate and evaluate them to rows over FHIR resources.

Follows HL7 SQL on FHIR v2.0.0 (the ViewDefinition logical model and its "Processing
algorithm"): `resource`, `constant` (`value[x]`, referenced as `%name`), `where` (each path must
give `true`), and nested `select` with `column` (`name`, `path`, `collection`, `type`), `forEach`,
`forEachOrNull`, `repeat` and `unionAll`; the functions `getResourceKey()` and
`getReferenceKey([type])`, and the `%rowIndex` variable. FHIRPath is evaluated by fhirpathpy
(caremesh.research.sof_fhirpath).

A select's rows are the cartesian product of its own columns, each nested select's rows and
its `unionAll` rows, computed once per focus node (the node itself, or each node of `forEach`,
`repeat`, or `forEachOrNull`, which gives one row of nulls when it selects nothing). Columns are
ordered as the view declares them: a select's `column` first, then its `select`s, then its
`unionAll`. Why caremesh runs its own: docs/decisions/0002-sql-on-fhir-runner.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import product
from pathlib import Path
from typing import Any, Final

import orjson
from fhirpathpy.engine.nodes import FP_Type, ResourceNode

from caremesh.errors import ConfigurationError
from caremesh.fhir.fhirpath import parse_fhirpath
from caremesh.research.sof_fhirpath import evaluate

_COLUMN_NAME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SHIPPED_VIEWS: Final = Path(__file__).resolve().parent / "views"
ROW_INDEX: Final = "rowIndex"
"""The variable (`%rowIndex`) holding the focus node's index in its forEach or repeat."""

Row = dict[str, Any]


class ViewEvaluationError(ConfigurationError):
    """A view gives an impossible result on a resource (e.g. two values in a single column)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: its name, its FHIRPath and whether it holds a collection."""

    name: str
    path: str
    parsed: Any
    collection: bool
    type: str | None


@dataclass(frozen=True, slots=True)
class Select:
    """A select node: its columns, nested selects, union branches and iteration."""

    columns: tuple[Column, ...]
    selects: tuple[Select, ...]
    union: tuple[Select, ...]
    iterate: Any | None
    """Parsed `forEach` / `forEachOrNull` path, or None."""
    or_null: bool
    repeat: tuple[Any, ...]

    def names(self) -> list[str]:
        """The column names of this node's rows, in order."""
        out = [c.name for c in self.columns]
        for sub in self.selects:
            out.extend(sub.names())
        if self.union:
            out.extend(self.union[0].names())
        return out


@dataclass(frozen=True, slots=True)
class ViewDefinition:
    """A validated ViewDefinition."""

    name: str
    resource: str
    root: Select
    where: tuple[tuple[str, Any], ...]
    constants: Mapping[str, Any]
    columns: tuple[Column, ...]
    """Every column in output order."""

    @property
    def column_names(self) -> list[str]:
        """The output column names, in order."""
        return [c.name for c in self.columns]


def _fail(source: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"view {source}: {what}")


def _path(value: Any, source: str, where: str) -> tuple[str, Any]:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, f"{where} must be a FHIRPath string")
    try:
        return value, parse_fhirpath(value)
    except ConfigurationError:
        raise _fail(source, f"{where} is not valid FHIRPath: {value!r}") from None


def _constants(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, list):
        raise _fail(source, "constant must be a list")
    out: dict[str, Any] = {}
    for item in data:
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not _COLUMN_NAME.match(name):
            raise _fail(source, "every constant needs a name of letters, digits and '_'")
        values = [k for k in item if k.startswith("value")]
        if len(values) != 1:
            raise _fail(source, f"constant {name} needs exactly one value[x]")
        out[name] = item[values[0]]
    return out


def _column(data: Any, source: str) -> Column:
    if not isinstance(data, Mapping):
        raise _fail(source, "a column must be an object")
    name = data.get("name")
    if not isinstance(name, str) or not _COLUMN_NAME.match(name):
        raise _fail(source, f"column name {name!r} must be letters, digits and '_'")
    text, parsed = _path(data.get("path"), source, f"column {name} path")
    collection = data.get("collection", False)
    if not isinstance(collection, bool):
        raise _fail(source, f"column {name}: collection must be true or false")
    kind = data.get("type")
    return Column(name, text, parsed, collection, kind if isinstance(kind, str) else None)


def _select(data: Any, source: str) -> Select:
    if not isinstance(data, Mapping):
        raise _fail(source, "a select must be an object")
    if "forEach" in data and "forEachOrNull" in data:
        raise _fail(source, "a select cannot have both forEach and forEachOrNull")
    iterate = None
    if "forEach" in data or "forEachOrNull" in data:
        key = "forEach" if "forEach" in data else "forEachOrNull"
        iterate = _path(data[key], source, key)[1]
    repeat = data.get("repeat", [])
    if not isinstance(repeat, list) or (repeat and iterate is not None):
        raise _fail(source, "repeat must be a list of paths, without forEach")
    columns = tuple(_column(c, source) for c in _list(data, "column", source))
    selects = tuple(_select(s, source) for s in _list(data, "select", source))
    union = tuple(_select(s, source) for s in _list(data, "unionAll", source))
    if union:
        first = union[0].names()
        if any(branch.names() != first for branch in union[1:]):
            raise _fail(source, "every unionAll branch must have the same columns, in order")
    node = Select(
        columns,
        selects,
        union,
        iterate,
        "forEachOrNull" in data,
        tuple(_path(p, source, "repeat")[1] for p in repeat),
    )
    if not node.names():
        raise _fail(source, "a select must give at least one column")
    return node


def _list(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise _fail(source, f"{key} must be a list")
    return value


def _all_columns(node: Select) -> list[Column]:
    out = list(node.columns)
    for sub in node.selects:
        out.extend(_all_columns(sub))
    if node.union:
        out.extend(_all_columns(node.union[0]))
    return out


def load_view(data: Any, source: str = "ViewDefinition") -> ViewDefinition:
    """Validate a parsed ViewDefinition (JSON object) or raise ConfigurationError."""
    if not isinstance(data, Mapping):
        raise _fail(source, "a ViewDefinition must be a JSON object")
    resource = data.get("resource")
    if not isinstance(resource, str) or not resource:
        raise _fail(source, "resource (a FHIR resource type) is required")
    selects = data.get("select")
    if not isinstance(selects, list) or not selects:
        raise _fail(source, "select must be a non-empty list")
    root = Select((), tuple(_select(s, source) for s in selects), (), None, False, ())
    where = []
    for item in _list(data, "where", source):
        path = item.get("path") if isinstance(item, Mapping) else None
        where.append(_path(path, source, "where path"))
    columns = _all_columns(root)
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _fail(source, f"column names must be unique: {', '.join(duplicates)}")
    name = data.get("name", resource.lower())
    if not isinstance(name, str) or not _COLUMN_NAME.match(name):
        raise _fail(source, "name (the table's name) must be letters, digits and '_'")
    return ViewDefinition(
        name,
        resource,
        root,
        tuple(where),
        _constants(data.get("constant"), source),
        tuple(columns),
    )


def read_view(path: Path) -> ViewDefinition:
    """Read and validate a ViewDefinition JSON file (ConfigurationError in one line)."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read view {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise ConfigurationError(f"view {path}: not valid JSON") from None
    return load_view(data, str(path))


def shipped_views() -> dict[str, Path]:
    """The views shipped with caremesh (caremesh/research/views/*.json), by name."""
    return {p.stem: p for p in sorted(SHIPPED_VIEWS.glob("*.json"))}


def find_view(spec: str) -> ViewDefinition:
    """A shipped view by its name (`patients`), else the ViewDefinition file at `spec`."""
    shipped = shipped_views()
    if spec in shipped:
        return read_view(shipped[spec])
    return read_view(Path(spec))


# --- evaluation -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, ResourceNode):
        value = value.data
    if isinstance(value, FP_Type):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Evaluator:
    def __init__(self, view: ViewDefinition) -> None:
        self.view = view

    def eval(self, node: Any, parsed: Any, index: int) -> list[Any]:
        env = {**self.view.constants, ROW_INDEX: index}
        try:
            result = evaluate(node, parsed, env)
        except Exception:  # noqa: BLE001 - fhirpathpy errors are untyped and may quote data
            raise ViewEvaluationError(
                f"view {self.view.name}: a path failed on a {self.view.resource}"
            ) from None
        return [r for r in result if not (isinstance(r, ResourceNode) and r.data is None)]

    def value(self, column: Column, node: Any, index: int) -> Any:
        values = [_plain(v) for v in self.eval(node, column.parsed, index)]
        if column.collection:
            return values
        if len(values) > 1:
            raise ViewEvaluationError(
                f"view {self.view.name}: column {column.name} has several values on a "
                f"{self.view.resource} (declare it collection: true)"
            )
        return values[0] if values else None

    def foci(self, select: Select, node: Any, index: int) -> list[tuple[Any, int]]:
        if select.iterate is not None:
            return [(n, i) for i, n in enumerate(self.eval(node, select.iterate, index))]
        if select.repeat:
            found: list[Any] = []

            def walk(current: Any) -> None:
                for parsed in select.repeat:
                    for child in self.eval(current, parsed, 0):
                        found.append(child)
                        walk(child)

            walk(node)
            return [(n, i) for i, n in enumerate(found)]
        return [(node, index)]

    def rows(self, select: Select, node: Any, index: int) -> list[Row]:
        foci = self.foci(select, node, index)
        if not foci and select.or_null:
            foci = [([], 0)]  # one row over an empty focus: nulls, and %rowIndex 0
        out: list[Row] = []
        for focus, position in foci:
            parts: list[list[Row]] = [
                [{c.name: self.value(c, focus, position) for c in select.columns}]
            ]
            parts.extend(self.rows(sub, focus, position) for sub in select.selects)
            if select.union:
                parts.append([r for b in select.union for r in self.rows(b, focus, position)])
            for combo in product(*parts):
                row: Row = {}
                for part in combo:
                    row.update(part)
                out.append(row)
        return out

    def included(self, resource: Any) -> bool:
        for text, parsed in self.view.where:
            result = [_plain(v) for v in self.eval(resource, parsed, 0)]
            if not result:
                return False
            if len(result) != 1 or not isinstance(result[0], bool):
                raise ViewEvaluationError(
                    f"view {self.view.name}: where {text!r} is not a boolean on a "
                    f"{self.view.resource}"
                )
            if not result[0]:
                return False
        return True


def view_runner(view: ViewDefinition) -> Callable[[Mapping[str, Any]], list[Row]]:
    """A function from one FHIR resource (JSON object) to its rows under `view`.

    Resources of another type give no rows. Each row has the view's columns, in order.
    Raises ViewEvaluationError when the view cannot be evaluated on a resource.
    """
    evaluator = _Evaluator(view)
    names = view.column_names

    def run(resource: Mapping[str, Any]) -> list[Row]:
        if resource.get("resourceType") != view.resource:
            return []
        node = ResourceNode.create_node(resource, view.resource)  # type: ignore[no-untyped-call]
        if not evaluator.included(node):
            return []
        return [{n: row.get(n) for n in names} for row in evaluator.rows(view.root, node, 0)]

    return run


def view_rows(view: ViewDefinition, resources: Iterator[Mapping[str, Any]]) -> Iterator[Row]:
    """Every row of `view` over `resources`, in resource order."""
    run = view_runner(view)
    for resource in resources:
        yield from run(resource)
