"""The FHIRPath subset of rule paths, parsed once at load time into linear chains.

Supported (FHIRPath N1 syntax; anything else is a ConfigurationError at load time):

    path      := term ('|' term)*
    term      := chain ('as' Type)?
    chain     := start ('.' step)*
    start     := ResourceType              Patient, Resource, DomainResource (whole resource)
               | element                   an element of the resource (lower-case name)
               | nodesByType('Type')       nodes of exactly that FHIR type, outside nested resources
               | nodesByName('name')       nodes of that element name, outside nested resources
               | '(' path ')'
    step      := element                   child element (choice elements by base name: value)
               | nodesByType('Type')       descendants of exactly that type (`Patient.nodesByType
               | nodesByName('name')         ('HumanName').use`), outside nested resources
               | where(predicate)          any FHIRPath boolean expression on the node
               | ofType(Type) | as(Type)   nodes of that type or a subtype (Age is a Quantity)

Paths compile to linear chains (`(a | b).c` becomes `a.c | b.c`), which `automaton` turns into
a matcher that runs inside the single walk over a resource. where() predicates see the node's
input value (before any rule changed it).

Predicates of the forms `a.b = 'x'`, `a != 'x'` (strings, numbers, booleans),
`a.startsWith('x')`, `a.endsWith('x')`, `a.contains('x')`, `a.exists()` and `a.empty()` are
evaluated natively; other predicates go through fhirpathpy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode

from caremesh.errors import ConfigurationError
from caremesh.fhir.fhirpath import parse_fhirpath
from caremesh.pseudonym.elements import known_resource_type

GENERAL_TYPES = frozenset({"Resource", "DomainResource"})
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")
_LITERAL = r"('(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|true|false)"
_NATIVE_COMPARE = re.compile(r"^\s*(\$this|[A-Za-z_][\w.]*)\s*(=|!=)\s*" + _LITERAL + r"\s*$")
_NATIVE_STRING_FN = re.compile(
    r"^\s*(?:(\$this|[A-Za-z_][\w.]*)\.)?(startsWith|endsWith|contains)\('((?:[^'\\]|\\.)*)'\)\s*$"
)
_AS = re.compile(r"as\s+")
_NATIVE_EXISTS = re.compile(r"^\s*(?:(\$this|[A-Za-z_][\w.]*)\.)?(exists|empty)\(\)\s*$")


class PredicateError(Exception):
    """A where() predicate failed at evaluation (carries no value)."""


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return _unescape(text[1:-1])
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


def _collect(value: Any, parts: tuple[str, ...]) -> list[Any]:
    """Values reached from `value` by element names; choice names match `valueX` keys."""
    items = [value]
    for part in parts:
        found: list[Any] = []
        for item in items:
            if type(item) is not dict:
                continue
            if part in item:
                hits = [item[part]]
            else:
                n = len(part)
                hits = [v for k, v in item.items() if k.startswith(part) and k[n : n + 1].isupper()]
            for hit in hits:
                if type(hit) is list:
                    found.extend(h for h in hit if h is not None)
                elif hit is not None:
                    found.append(hit)
        items = found
    return items


def _parts(path: str | None) -> tuple[str, ...]:
    if not path or path == "$this":
        return ()
    return tuple(path.split("."))


Predicate = Callable[[Any, str], bool]


def compile_predicate(text: str, model: dict[str, Any] | None) -> Predicate:
    """A where() predicate: native for the simple forms, fhirpathpy otherwise."""
    match = _NATIVE_COMPARE.match(text)
    if match:
        parts, op, expected = _parts(match.group(1)), match.group(2), _literal(match.group(3))

        def compare(value: Any, _type: str) -> bool:
            got = _collect(value, parts)
            if len(got) != 1 or type(got[0]) is dict:
                return False
            equal = got[0] == expected and isinstance(got[0], bool) == isinstance(expected, bool)
            return equal if op == "=" else not equal

        return compare
    match = _NATIVE_STRING_FN.match(text)
    if match:
        parts, fn, arg = _parts(match.group(1)), match.group(2), _unescape(match.group(3))

        single = parts[0] if len(parts) == 1 else None

        def string_fn(value: Any, _type: str) -> bool:
            if single is not None and type(value) is dict:
                hit = value.get(single)  # a plain string element: what _collect finds
                got = [hit] if type(hit) is str else _collect(value, parts)
            else:
                got = _collect(value, parts)
            if len(got) != 1 or not isinstance(got[0], str):
                return False
            text = got[0]
            if fn == "startsWith":
                return text.startswith(arg)
            if fn == "endsWith":
                return text.endswith(arg)
            return arg in text

        return string_fn
    match = _NATIVE_EXISTS.match(text)
    if match:
        parts, fn = _parts(match.group(1)), match.group(2)

        def exists(value: Any, _type: str) -> bool:
            found = bool(_collect(value, parts))
            return found if fn == "exists" else not found

        return exists
    parse_fhirpath(text)
    parsed = parse_fhirpath(f"select({text})")  # select() binds $this to the node

    def general(value: Any, fhir_type: str) -> bool:
        try:
            result = fhirpath_eval(value, fhir_type, parsed, model)
        except Exception:  # noqa: BLE001 - fhirpathpy errors are untyped and may quote data
            raise PredicateError from None
        return bool(result == [True])

    return general


def fhirpath_eval(
    value: Any, fhir_type: str, parsed: Any, model: dict[str, Any] | None = None
) -> list[Any]:
    """Evaluate a parsed expression with `value` (of FHIR type `fhir_type`) as its context."""
    node = ResourceNode.create_node(value, fhir_type or None)  # type: ignore[no-untyped-call]
    result = apply_parsed_path(node, parsed, {}, model)  # type: ignore[no-untyped-call]
    return list(result)


@dataclass(frozen=True, slots=True)
class Step:
    """One step after the start: `child` (consumes a node), `bytype` / `byname` (consumes any
    number of nodes down to one of that type or name) or a filter (`oftype`, `where`)."""

    kind: str
    arg: str = ""
    predicate: Predicate | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """A linear path: a start (`resource`, `type` or `name` lookup) and its steps."""

    start: str
    arg: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Union:
    """The compiled form of a rule path: linear chains (parenthesised groups distributed)."""

    chains: tuple[Chain, ...]
    resource_types: frozenset[str] | None = field(default=None)
    unknown_types: frozenset[str] = frozenset()
    """Resource types the path names that no model defines (each resource then fails)."""


class _Parser:
    def __init__(self, text: str, model: dict[str, Any] | None) -> None:
        self.s = text
        self.i = 0
        self.model = model
        self.unknown_types: set[str] = set()

    def fail(self, what: str) -> ConfigurationError:
        return ConfigurationError(f"unsupported rule path {self.s!r} at offset {self.i}: {what}")

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def eat(self, char: str) -> None:
        self.ws()
        if not self.s.startswith(char, self.i):
            raise self.fail(f"expected {char!r}")
        self.i += len(char)

    def ident(self) -> str:
        self.ws()
        match = _IDENT.match(self.s, self.i)
        if not match:
            raise self.fail("expected a name")
        self.i = match.end()
        return match.group(0)

    def string(self) -> str:
        self.ws()
        match = _STRING.match(self.s, self.i)
        if not match:
            raise self.fail("expected a quoted string")
        self.i = match.end()
        return _unescape(match.group(1))

    def balanced(self) -> str:
        """The raw text inside a parenthesised argument list (quotes respected)."""
        self.eat("(")
        depth, begin, quoted = 1, self.i, False
        while self.i < len(self.s):
            char = self.s[self.i]
            if quoted:
                if char == "\\":
                    self.i += 1
                elif char == "'":
                    quoted = False
            elif char == "'":
                quoted = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.i += 1
                    return self.s[begin : self.i - 1]
            self.i += 1
        raise self.fail("unbalanced parentheses")

    def union(self) -> list[Chain]:
        chains = self.term()
        self.ws()
        while self.s.startswith("|", self.i):
            self.i += 1
            chains.extend(self.term())
            self.ws()
        return chains

    def term(self) -> list[Chain]:
        chains = self.chain()
        self.ws()
        match = _AS.match(self.s, self.i)
        if match:
            self.i = match.end()
            cast = Step("oftype", self.ident())
            chains = [Chain(c.start, c.arg, (*c.steps, cast)) for c in chains]
        return chains

    def chain(self) -> list[Chain]:
        self.ws()
        steps: list[Step] = []
        heads: list[Chain]
        if self.s.startswith("(", self.i):
            self.i += 1
            heads = self.union()
            self.eat(")")
        else:
            name = self.ident()
            if name in ("nodesByType", "nodesByName"):
                self.eat("(")
                arg = self.string()
                self.eat(")")
                heads = [Chain("type" if name == "nodesByType" else "name", arg, ())]
            elif name[0].isupper():
                if name not in GENERAL_TYPES and not known_resource_type(name):
                    self.unknown_types.add(name)  # upstream: a processing error, not a load error
                heads = [Chain("resource", name, ())]
            else:
                heads = [Chain("resource", "Resource", (Step("child", name),))]
        while True:
            self.ws()
            if not self.s.startswith(".", self.i):
                break
            self.i += 1
            name = self.ident()
            if name == "where":
                text = self.balanced()
                steps.append(Step("where", text, compile_predicate(text, self.model)))
            elif name in ("nodesByType", "nodesByName"):
                self.eat("(")
                arg = self.string()
                self.eat(")")
                steps.append(Step("bytype" if name == "nodesByType" else "byname", arg))
            elif name in ("ofType", "as"):
                self.eat("(")
                steps.append(Step("oftype", self.ident()))
                self.eat(")")
            elif self.s.startswith("(", self.i):
                raise self.fail(f"function {name}() is not supported in rule paths")
            else:
                steps.append(Step("child", name))
        return [Chain(h.start, h.arg, (*h.steps, *steps)) for h in heads]


def compile_path(text: str, model: dict[str, Any] | None = None) -> Union:
    """Compile a rule path; raise ConfigurationError when it is outside the supported subset."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("a rule path must be a non-empty string")
    parser = _Parser(text, model)
    chains = parser.union()
    parser.ws()
    if parser.i != len(text):
        raise parser.fail("unexpected text")
    types = {c.arg for c in chains if c.start == "resource"}
    unknown = frozenset(parser.unknown_types)
    if all(c.start == "resource" for c in chains) and not types & GENERAL_TYPES:
        return Union(tuple(chains), frozenset(types), unknown)
    return Union(tuple(chains), None, unknown)
