"""Walk plans: what the anonymizer does with each JSON key of a node, decided once per context.

The automaton (`automaton`) already finds a node's rule with one cached transition per key;
what a walk still had to do per node was to combine that match with the inherited rule, look at
the element type and pick a method. None of that depends on the value unless a where()
predicate is pending, so a `Plan` — the children of a node in one context (automaton state,
type key, inherited rule, parent FHIR type, root or not) — caches, per JSON key, an `Action`:

- `GENERAL`: the engine's general code handles the key (`_x` extensions, `resourceType`, the
  root `id`, nested resources);
- `PENDING`: a where() predicate decides the node's state and rule; the automaton resolves it
  per value and the action for each outcome is cached like any other;
- for any other key, how a primitive value is treated (`COPY` kept as is, `DROP` removed with
  the REDACTED label, `CALL` the rule's method on the value), and for an object value the
  `Plan` of its children (None: the method works on the whole object, e.g. substitute).

Plans are filled lazily, key by key, as resources arrive, so they stay exact for keys no model
defines; the rule semantics are those of the general path, which every plan entry is derived
from (the unit tests compare the two on generated resources). On top of the per-key actions,
`shortcut` settles whole leaf objects without a walk: objects whose keys are all COPY keys
(codings, quantities, codeable concepts) are copied, objects whose keys are all DROP keys
(a redacted name, telecom or identifier) are dropped with their label.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from caremesh.pseudonym.automaton import Entry, Matcher, is_unknown
from caremesh.pseudonym.elements import ElementInfo
from caremesh.pseudonym.methods import DATE_TYPES
from caremesh.pseudonym.output import REDACTED
from caremesh.pseudonym.ruleset import Parameters, Rule
from caremesh.pseudonym.values import Method, RunState

COPY, DROP, CALL, GENERAL, PENDING = 0, 1, 2, 3, 4
"""Action kinds (see the module docstring); the settled ones (COPY, DROP, CALL) are < GENERAL."""

WALKED = frozenset({"keep", "redact", "cryptoHash", "generalize"})
"""Methods under which an object node is walked child by child, the method applying to each
primitive below it, as upstream's engine does (the others take the object)."""


class Action(NamedTuple):
    """What to do with one JSON key of a node in a plan's context."""

    kind: int
    rule: Rule | None
    """The node's own rule: the first of its match and the inherited rule."""
    info: ElementInfo
    child: Plan | None
    entry: Entry | None
    outcomes: dict[tuple[int, int], Action] | None = None
    """PENDING only: the action for each (state, rule) its predicates can resolve to."""
    method: Method | None = None
    """CALL only: the rule's method on primitive values."""


_TRIES = 64
_GENERAL = Action(GENERAL, None, ElementInfo("", "", None), None, None)


class Plan(dict[str, Action]):
    """The actions of the children of a node in one context, computed on first use per key."""

    __slots__ = (
        "compiler",
        "dropped",
        "id_entry",
        "parent_type",
        "plain",
        "rule",
        "state",
        "top",
        "tries",
        "type_key",
    )

    def __init__(  # noqa: PLR0917 - the context, stored as is
        self,
        compiler: PlanCompiler,
        state: int,
        type_key: str | None,
        rule: Rule | None,
        parent_type: str,
        top: bool,
    ) -> None:
        super().__init__()
        self.compiler = compiler
        self.state = state
        self.type_key = type_key
        self.rule = rule
        self.parent_type = parent_type
        self.top = top
        self.plain: set[str] = set()
        """The keys seen so far whose action is COPY (see `shortcut`)."""
        self.dropped: set[str] = set()
        """The keys seen so far whose action is DROP (see `shortcut`)."""
        self.tries = _TRIES
        self.id_entry: Entry | None = None
        """The automaton entry of child `id` (a root's id is read before the walk)."""
        """How many more misses `shortcut` may have before it stops trying on this plan."""

    def __missing__(self, key: str) -> Action:
        action = self[key] = self.compiler.action(self, key)
        if action.kind == COPY:
            self.plain.add(key)
        elif action.kind == DROP:
            self.dropped.add(key)
        return action

    def fields(self) -> dict[str, Entry]:
        """The automaton's entries for the children of this node."""
        return self.compiler.matcher.fields(self.state, self.type_key)

    def entry(self, key: str) -> Entry:
        """The automaton's entry for child `key`."""
        fields = self.compiler.matcher.fields(self.state, self.type_key)
        return fields.get(key) or self.compiler.matcher.entry(
            fields, self.state, self.type_key, key
        )


def shortcut(obj: dict[str, Any], plan: Plan, run: RunState, system: str) -> dict[str, Any] | None:
    """What walking `obj` with `plan` gives, without the walk, for the two common leaf shapes;
    None when neither applies (or `obj` is empty), and the caller walks.

    - every key a COPY key and every value a non-empty scalar, or an object or a non-empty list
      of objects of that same shape (`copied`): a copy of `obj`;
    - every key a DROP key and every value a scalar or a list of scalars: nothing is left
      (an empty dict), with the REDACTED label if any value was there to remove.

    `system` is the study pseudonym's Identifier.system: list items that carry it are left to
    the walk (which drops their duplicates). A plan whose objects keep missing both shapes stops
    trying."""
    if plan.plain.issuperset(obj):
        found = copied(obj, plan, system)
        if found is None:
            plan.tries -= 1
        return found
    if plan.dropped.issuperset(obj):
        removed = False
        for value in obj.values():
            kind = type(value)
            if kind is str:
                removed = removed or bool(value)
            elif kind is list:
                for item in value:
                    if type(item) is dict:
                        plan.tries -= 1
                        return None
                    if not (item is None or item == "" or type(item) is list):
                        removed = True
            elif kind is dict:
                plan.tries -= 1
                return None
            elif value is not None:
                removed = True
        if removed:
            run.flags |= REDACTED
        return {}
    plan.tries -= 1
    return None


def copied(obj: dict[str, Any], plan: Plan, system: str) -> dict[str, Any] | None:
    """The copy-only half of `shortcut` (no label can be earned on this path)."""
    if not obj or not plan.plain.issuperset(obj):
        return None
    out: dict[str, Any] = {}
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            if not value:
                return None
        elif kind is list:
            child = plan[key].child
            if not value or child is None:
                return None
            items = []
            for item in value:
                new = copied(item, child, system) if type(item) is dict else None
                if new is None or new.get("system") == system:
                    return None
                items.append(new)
            out[key] = items
            continue
        elif kind is dict:
            child = plan[key].child
            new = None if child is None else copied(value, child, system)
            if new is None:
                return None
            out[key] = new
            continue
        elif kind is not int and kind is not float and kind is not bool:
            return None
        out[key] = value
    return out


class PlanCompiler:
    """The plans of one anonymizer (its matcher and parameters), shared by all its walks."""

    def __init__(self, matcher: Matcher, params: Parameters, methods: dict[str, Method]) -> None:
        self.matcher = matcher
        self.params = params
        self.methods = methods
        self.enabled = True
        self.strict = False
        """True: an element no model defines goes to the general code, which refuses it."""
        """False: every key takes the general path (the reference the tests compare plans to)."""
        self._plans: dict[tuple[int, str | None, int, str, bool], Plan] = {}

    def plan(
        self, state: int, type_key: str | None, rule: Rule | None, parent_type: str, top: bool
    ) -> Plan:
        """The plan of a node's children in this context (rules are compared by identity)."""
        key = (state, type_key, -1 if rule is None else id(rule), parent_type, top)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = Plan(self, state, type_key, rule, parent_type, top)
        return found

    def action(self, plan: Plan, key: str) -> Action:
        """Derive the action of child `key` from the automaton entry and the inherited rule."""
        if (
            not self.enabled
            or not key
            or key[0] == "_"
            or key == "resourceType"
            or (plan.top and key == "id")
        ):
            return _GENERAL
        entry = plan.entry(key)
        if entry.info.is_resource or (
            self.strict and plan.type_key is not None and is_unknown(entry.info)
        ):
            return _GENERAL
        if entry.pending:
            return Action(PENDING, None, entry.info, None, entry, {})
        return self._settled(plan, entry)

    def resolved(self, plan: Plan, action: Action, state: int, match: Rule | None) -> Action:
        """The action of a PENDING key once its predicates resolved to (state, match)."""
        assert action.outcomes is not None
        key = (state, -1 if match is None else id(match))
        found = action.outcomes.get(key)
        if found is None:
            entry = Entry(action.info, state, match, ())
            found = action.outcomes[key] = self._settled(plan, entry)
        return found

    def _settled(self, plan: Plan, entry: Entry) -> Action:
        info = entry.info
        match, inherited = entry.match, plan.rule
        rule = (
            match
            if match is not None and (inherited is None or match.index < inherited.index)
            else inherited
        )
        child = None
        if rule is None or rule.method in WALKED:
            child = self.plan(entry.state, info.type_key, rule, info.fhir_type, False)
        kind = self._primitive_kind(rule, info, plan.parent_type)
        method = self.methods[rule.method] if kind == CALL and rule is not None else None
        return Action(kind, rule, info, child, entry, None, method)

    def _primitive_kind(self, rule: Rule | None, info: ElementInfo, parent_type: str) -> int:
        if rule is None or rule.method == "keep":
            return COPY
        if rule.method == "redact" and not (
            (info.name == "postalCode" and self.params.partial_zip_codes)
            or info.fhir_type in DATE_TYPES
            or (info.name == "value" and parent_type == "Age")
        ):
            return DROP  # the cases where values.ValueMethods._redact always returns None
        return CALL
