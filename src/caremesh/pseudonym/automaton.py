"""Rule matching as a cached automaton, so one walk over a resource finds every node's rule.

A node's rule is the first rule (in file order) whose path selects the node or one of its
ancestors (DESIGN §6: first match wins and covers the subtree). Rule paths are linear chains
(see `paths`); a node's state is the set of (chain, position) pairs still alive after its
ancestry, and the transition to a child depends only on (state, parent type, JSON key), so it
is computed once and cached: per node the walk does one dict lookup. Only where() predicates
depend on values; they are evaluated on the node when reached.

Nodes follow the FHIR element model: every item of a JSON array is a node named after its
element, choice elements are named by their base name (`valueQuantity` is node `value` of type
`Quantity`), and the `_x` object of a primitive hangs below node `x`. Element types come from
`elements`, i.e. from the fhir.resources models.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from caremesh.pseudonym.elements import (
    UNKNOWN_TYPE,
    ElementInfo,
    children_of,
    type_family,
)
from caremesh.pseudonym.paths import GENERAL_TYPES, Chain, Predicate
from caremesh.pseudonym.ruleset import Rule, RuleSet

_CONSUMING = frozenset({"child", "bytype", "byname"})
"""Steps that consume nodes (the others filter the node reached)."""

Position = tuple[int, int]
"""(chain number, index of the chain's next step)."""


class Entry(NamedTuple):
    """What the automaton knows about one child key of one parent state and type."""

    info: ElementInfo
    state: int
    match: Rule | None
    pending: tuple[Position, ...]


class _Decision:
    """A node of an entry's predicate decision tree (see `Matcher.resolve`)."""

    __slots__ = ("entry", "failed", "passed", "position", "result")

    def __init__(self, entry: Entry) -> None:
        self.entry = entry  # keeps the entry, whose id() keys the tree, alive
        self.position: Position | None = None
        self.result: tuple[int, Rule | None] | None = None
        self.passed: _Decision | None = None
        self.failed: _Decision | None = None


class PredicateFailedError(Exception):
    """A where() predicate raised (the message carries nothing from the data)."""


_UNKNOWN: dict[str, ElementInfo] = {}


def unknown_element(key: str) -> ElementInfo:
    """The element info of a JSON key no model defines (still walked, never typed)."""
    info = _UNKNOWN.get(key)
    if info is None:
        info = _UNKNOWN[key] = ElementInfo(key, UNKNOWN_TYPE, None)
    return info


def is_unknown(info: ElementInfo) -> bool:
    """Whether an element is one no model defines for its parent's type."""
    return _UNKNOWN.get(info.name) is info


class Matcher:
    """The compiled rules of a RuleSet, with transition caches filled as resources arrive."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.preference = ruleset.preference
        self.chains: list[tuple[Chain, Rule]] = [
            (chain, rule) for rule in ruleset.rules for chain in rule.selector.chains
        ]
        self._anywhere = [
            n for n, (chain, _rule) in enumerate(self.chains) if chain.start in ("type", "name")
        ]
        self._states: dict[frozenset[Position], int] = {frozenset(): 0}
        self._members: list[frozenset[Position]] = [frozenset()]
        self._fields: dict[tuple[int, str | None], dict[str, Entry]] = {}
        self._roots: dict[str, Entry] = {}
        self._trees: dict[int, _Decision] = {}

    # -- states ---------------------------------------------------------------------------

    def _intern(self, positions: set[Position]) -> int:
        key = frozenset(positions)
        found = self._states.get(key)
        if found is None:
            found = self._states[key] = len(self._members)
            self._members.append(key)
        return found

    def _settle(
        self, n: int, pos: int, fhir_type: str, alive: set[Position], pending: list[Position]
    ) -> Rule | None:
        """Run the filters after a consumed node; return the rule if the chain completes."""
        chain, rule = self.chains[n]
        steps = chain.steps
        while pos < len(steps):
            step = steps[pos]
            if step.kind in _CONSUMING:
                alive.add((n, pos))
                return None
            if step.kind == "where":
                pending.append((n, pos))
                return None
            if step.arg not in type_family(fhir_type):
                return None
            pos += 1
        return rule

    @staticmethod
    def _first(a: Rule | None, b: Rule | None) -> Rule | None:
        if a is None:
            return b
        if b is None:
            return a
        return a if a.index <= b.index else b

    def _entry(self, state: int, info: ElementInfo) -> Entry:
        alive: set[Position] = set()
        pending: list[Position] = []
        match: Rule | None = None
        for n, pos in self._members[state]:
            step = self.chains[n][0].steps[pos]
            kind = step.kind
            if kind == "child":
                hit = step.arg == info.name
            else:  # bytype / byname: a descendant search stays alive below this node
                alive.add((n, pos))
                hit = step.arg == (info.fhir_type if kind == "bytype" else info.name)
            if hit:
                match = self._first(match, self._settle(n, pos + 1, info.fhir_type, alive, pending))
        for n in self._anywhere:
            chain = self.chains[n][0]
            hit = info.fhir_type == chain.arg if chain.start == "type" else info.name == chain.arg
            if hit:
                match = self._first(match, self._settle(n, 0, info.fhir_type, alive, pending))
        return Entry(info, self._intern(alive), match, tuple(pending))

    # -- public ---------------------------------------------------------------------------

    def fields(self, state: int, type_key: str | None) -> dict[str, Entry]:
        """The (lazily filled) entries of the children of a node in `state` of type `type_key`."""
        key = (state, type_key)
        found = self._fields.get(key)
        if found is None:
            found = self._fields[key] = {}
        return found

    def entry(self, fields: dict[str, Entry], state: int, type_key: str | None, key: str) -> Entry:
        """Compute and cache the entry of JSON key `key` (callers try `fields.get` first)."""
        table = children_of(type_key, self.preference) if type_key else {}
        info = table.get(key) or unknown_element(key)
        found = fields[key] = self._entry(state, info)
        return found

    def root(self, resource_type: str) -> Entry:
        """The entry of a resource's root node."""
        found = self._roots.get(resource_type)
        if found is None:
            info = ElementInfo(
                resource_type, resource_type, f"{resource_type.lower()}.{resource_type}"
            )
            alive: set[Position] = set()
            pending: list[Position] = []
            match: Rule | None = None
            for n, (chain, _rule) in enumerate(self.chains):
                if chain.start == "resource" and (
                    chain.arg in GENERAL_TYPES or chain.arg == resource_type
                ):
                    match = self._first(match, self._settle(n, 0, resource_type, alive, pending))
            found = self._roots[resource_type] = Entry(
                info, self._intern(alive), match, tuple(pending)
            )
        return found

    def resolve(self, entry: Entry, value: Any) -> tuple[int, Rule | None]:
        """State and rule of a node whose entry has pending where() predicates.

        The result depends on the value only through the predicates' outcomes, so it is cached
        per entry in a decision tree: each node names the next predicate the full resolution
        would evaluate, and its leaves hold (state, rule). Unseen outcome paths are resolved in
        full and added."""
        node = self._trees.get(id(entry))
        if node is None:
            node = self._trees[id(entry)] = _Decision(entry)
        while True:
            position = node.position
            if position is None:
                if node.result is None:
                    break  # a path not seen yet
                return node.result
            n, pos = position
            predicate = self.chains[n][0].steps[pos].predicate
            assert predicate is not None
            try:
                passed = bool(predicate(value, entry.info.fhir_type))
            except Exception:  # noqa: BLE001 - fhirpathpy errors are untyped and may quote data
                raise PredicateFailedError from None
            following = node.passed if passed else node.failed
            if following is None:
                break
            node = following
        trace: list[tuple[Position, bool]] = []
        result = self._resolve(entry, value, trace)
        self._record(self._trees[id(entry)], trace, result)
        return result

    @staticmethod
    def _record(
        node: _Decision, trace: list[tuple[Position, bool]], result: tuple[int, Rule | None]
    ) -> None:
        for position, passed in trace:
            node.position = position
            following = node.passed if passed else node.failed
            if following is None:
                following = _Decision(node.entry)
                if passed:
                    node.passed = following
                else:
                    node.failed = following
            node = following
        node.result = result

    def _resolve(
        self, entry: Entry, value: Any, trace: list[tuple[Position, bool]]
    ) -> tuple[int, Rule | None]:
        alive = set(self._members[entry.state])
        match = entry.match
        fhir_type = entry.info.fhir_type
        todo = list(entry.pending)
        while todo:
            n, pos = todo.pop()
            predicate: Predicate | None = self.chains[n][0].steps[pos].predicate
            assert predicate is not None
            try:
                passed = predicate(value, fhir_type)
            except Exception:  # noqa: BLE001 - fhirpathpy errors are untyped and may quote data
                raise PredicateFailedError from None
            trace.append(((n, pos), bool(passed)))
            if passed:
                more: list[Position] = []
                match = self._first(match, self._settle(n, pos + 1, fhir_type, alive, more))
                todo.extend(more)
        return self._intern(alive), match
