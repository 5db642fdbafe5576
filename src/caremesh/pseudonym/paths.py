"""The FHIRPath subset of rule paths, compiled once and evaluated over a `NodeIndex` by identity.

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
               | where(predicate)          any FHIRPath boolean expression on the node
               | ofType(Type) | as(Type)   nodes of that type or a subtype (Age is a Quantity)
               | first()

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
from fhirpathpy.parser import parse as fhirpath_parse

from caremesh.errors import ConfigurationError
from caremesh.pseudonym.elements import known_resource_type, type_family
from caremesh.pseudonym.tree import NodeIndex

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

        def string_fn(value: Any, _type: str) -> bool:
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
    parsed = parse_fhirpath(text)

    def general(value: Any, fhir_type: str) -> bool:
        node = ResourceNode.create_node(value, fhir_type) if fhir_type else value
        try:
            result = apply_parsed_path(node, parsed, {}, model)
        except Exception:  # fhirpathpy raises plain exceptions that may quote data
            raise PredicateError from None
        return bool(result == [True])

    return general


def parse_fhirpath(text: str) -> Any:
    """Parse a FHIRPath expression with fhirpathpy, or raise ConfigurationError."""
    try:
        return fhirpath_parse(text)
    except Exception:  # the parser raises assorted exception types
        raise ConfigurationError(f"invalid FHIRPath expression: {text!r}") from None


@dataclass(frozen=True, slots=True)
class Start:
    """Where a chain starts: the resource (`kind` root/resource), a type or a name lookup."""

    kind: str
    arg: str = ""
    group: Union | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """One navigation step: child / where / oftype / first."""

    kind: str
    arg: str = ""
    predicate: Predicate | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """A start and its steps."""

    start: Start
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Union:
    """A union of chains: the compiled form of a rule path."""

    terms: tuple[Chain, ...]
    resource_types: frozenset[str] | None = field(default=None)

    def select(self, ix: NodeIndex) -> list[int]:
        """The nodes this path selects in a resource, in document order, without duplicates."""
        if len(self.terms) == 1:
            return _select_chain(self.terms[0], ix)
        found: set[int] = set()
        for term in self.terms:
            found.update(_select_chain(term, ix))
        return sorted(found)


def _select_chain(chain: Chain, ix: NodeIndex) -> list[int]:
    start = chain.start
    nodes: list[int]
    if start.kind == "resource":
        nodes = [0] if start.arg in GENERAL_TYPES or start.arg == ix.resource_type else []
    elif start.kind == "root":
        nodes = [0]
    elif start.kind == "type":
        nodes = ix.by_type.get(start.arg, [])
    elif start.kind == "name":
        nodes = ix.by_name.get(start.arg, [])
    else:
        assert start.group is not None
        nodes = start.group.select(ix)
    for step in chain.steps:
        if not nodes:
            return nodes
        kind = step.kind
        if kind == "child":
            parents = set(nodes)
            parent = ix.parent
            nodes = [j for j in ix.by_name.get(step.arg, ()) if parent[j] in parents]
        elif kind == "where":
            assert step.predicate is not None
            test = step.predicate
            nodes = [j for j in nodes if test(ix.get(j), ix.ftype[j])]
        elif kind == "oftype":
            ftype = ix.ftype
            nodes = [j for j in nodes if step.arg in type_family(ftype[j])]
        else:
            nodes = nodes[:1]
    return nodes


class _Parser:
    def __init__(self, text: str, model: dict[str, Any] | None) -> None:
        self.s = text
        self.i = 0
        self.model = model

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

    def union(self) -> Union:
        terms = [self.term()]
        self.ws()
        while self.s.startswith("|", self.i):
            self.i += 1
            terms.append(self.term())
            self.ws()
        return Union(tuple(terms))

    def term(self) -> Chain:
        chain = self.chain()
        self.ws()
        match = _AS.match(self.s, self.i)
        if match:
            self.i = match.end()
            chain = Chain(chain.start, (*chain.steps, Step("oftype", self.ident())))
        return chain

    def chain(self) -> Chain:
        self.ws()
        steps: list[Step] = []
        if self.s.startswith("(", self.i):
            self.i += 1
            start = Start("group", group=self.union())
            self.eat(")")
        else:
            name = self.ident()
            if name in ("nodesByType", "nodesByName"):
                self.eat("(")
                arg = self.string()
                self.eat(")")
                start = Start("type" if name == "nodesByType" else "name", arg)
            elif name[0].isupper():
                if name not in GENERAL_TYPES and not known_resource_type(name):
                    raise self.fail(f"unknown resource type {name}")
                start = Start("resource", name)
            else:
                start = Start("root")
                steps.append(Step("child", name))
        while True:
            self.ws()
            if not self.s.startswith(".", self.i):
                break
            self.i += 1
            name = self.ident()
            if name == "where":
                text = self.balanced()
                parse_fhirpath(text)
                steps.append(Step("where", text, compile_predicate(text, self.model)))
            elif name in ("ofType", "as"):
                self.eat("(")
                steps.append(Step("oftype", self.ident()))
                self.eat(")")
            elif name == "first":
                self.eat("(")
                self.eat(")")
                steps.append(Step("first"))
            elif self.s.startswith("(", self.i):
                raise self.fail(f"function {name}() is not supported in rule paths")
            else:
                steps.append(Step("child", name))
        return Chain(start, tuple(steps))


def compile_path(text: str, model: dict[str, Any] | None = None) -> Union:
    """Compile a rule path; raise ConfigurationError when it is outside the supported subset."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("a rule path must be a non-empty string")
    parser = _Parser(text, model)
    compiled = parser.union()
    parser.ws()
    if parser.i != len(text):
        raise parser.fail("unexpected text")
    types: set[str] = set()
    for term in compiled.terms:
        start = term.start
        if start.kind != "resource" or start.arg in GENERAL_TYPES:
            return compiled
        types.add(start.arg)
    return Union(compiled.terms, frozenset(types))
