"""The anonymizer: applies a RuleSet to a FHIR resource, its Bundle entries and contained ones.

Semantics are those of FHIR-Tools-for-Anonymization as restated in DESIGN §6. Every node gets
the first rule (file order) that selects it or one of its ancestors, and that rule's method is
applied to it; the whole pass is one walk over the input that builds a new, pruned tree (the
input is never modified). Nested resources are anonymized as resources of their own, with
their own rules; a parent rule that selects a nested resource covers all of it. Security
labels follow upstream's mapping: redact, partial date/age redaction and a date-shift that
falls back to redaction → REDACTED; partial zip code → ABSTRED; cryptoHash → CRYTOHASH;
encrypt → ENCRYPT; perturb and date-shift → PERTURBED; substitute → SUBSTITUTED; generalize →
GENERALIZED; caremesh's pseudonymize → PSEUDED. A contained resource's labels go to its
container; a Bundle also carries its entries' labels.

Order-dependent details kept from upstream: the resource-scope date shift uses the root
resource's id as the rules before the dateshift rule left it (so `Resource.id` cryptoHash
listed first shifts by the hashed id); substitution keeps the nodes that earlier rules
processed. Difference: where() predicates see input values.

The walk follows compiled plans (`plan`): per node context and JSON key, the decision that
depends only on the path and element type is made once; nested resources, `_x` extensions
and nodes under where() predicates go through the general code, as does everything when the
anonymizer is built with `compiled_plans=False`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from caremesh.envelope import KeyId, Pseudonym
from caremesh.errors import ConfigurationError, PseudonymisationError
from caremesh.pseudonym import methods as m
from caremesh.pseudonym.automaton import Entry, Matcher, PredicateFailedError, is_unknown
from caremesh.pseudonym.elements import (
    PRIMITIVE_EXTENSION_KEY,
    ElementInfo,
    known_resource_type,
    type_family,
)
from caremesh.pseudonym.output import (
    PERTURBED,
    PSEUDED,
    REDACTED,
    SUBSTITUTED,
    add_security_labels,
    prune_aligned,
    prune_value,
    with_security_labels,
)
from caremesh.pseudonym.plan import (
    CALL,
    COPY,
    DROP,
    GENERAL,
    PENDING,
    WALKED,
    Action,
    Plan,
    PlanCompiler,
    shortcut,
)
from caremesh.pseudonym.ruleset import Rule, RuleSet, parse_parameters
from caremesh.pseudonym.values import PSEUDONYM_SYSTEM, RunState, ValueMethods
from caremesh.pseudonym.vault import PseudonymVault


class _RuleError(Exception):
    def __init__(self, code: str, where: str) -> None:
        super().__init__(f"{code} at {where}")


@dataclass(frozen=True, slots=True)
class AnonymizedResource:
    """A pseudonymised resource with the key version and pseudonym that produced it."""

    resource: dict[str, Any]
    key_id: KeyId | None
    pseudonym: Pseudonym | None


def _first(inherited: Rule | None, match: Rule | None) -> Rule | None:
    if match is None:
        return inherited
    if inherited is None or match.index < inherited.index:
        return match
    return inherited


class Anonymizer:
    """Applies one RuleSet with its keys; `apply` is pure apart from encrypt/perturb randomness."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        parameters: Mapping[str, Any] | None = None,
        study: str | None = None,
        vault: PseudonymVault | None = None,
        key_id: KeyId | None = None,
        today: date | None = None,
        rng: random.Random | None = None,
        compiled_plans: bool = True,
    ) -> None:
        """`compiled_plans=False` runs every node through the general path (see `plan`): the
        same output, slower; the reference the plan tests compare against."""
        self.ruleset = ruleset
        self.params = p = parse_parameters({**ruleset.raw_parameters, **(parameters or {})})
        self.study = study
        self.key_id = key_id
        self._today = today
        used = ruleset.methods()
        if "cryptoHash" in used and not p.crypto_hash_key:
            raise ConfigurationError("cryptoHash rules need parameters.cryptoHashKey")
        if "dateshift" in used and not p.date_shift_key and p.date_shift_fixed_offset is None:
            raise ConfigurationError("dateshift rules need parameters.dateShiftKey")
        if "encrypt" in used and not m.valid_aes_key(p.encrypt_key):
            raise ConfigurationError("encrypt rules need a 16, 24 or 32 byte encryptKey")
        if "pseudonymize" in used and (vault is None or not study):
            raise ConfigurationError("pseudonymize rules need a study and a pseudonym vault")
        self._needs_patient = "pseudonymize" in used or (
            "dateshift" in used
            and p.date_shift_scope == "patient"
            and p.date_shift_fixed_offset is None
        )
        self._unknown_rule = next(
            (rule.index for rule in ruleset.rules if rule.selector.unknown_types), None
        )
        """A rule naming a resource type no model defines: upstream fails every resource."""
        self._matcher = Matcher(ruleset)
        self._shadows: dict[int, Rule] = {}
        self._pseudonym_system = PSEUDONYM_SYSTEM.format(study=study or "")
        self._values = ValueMethods(
            p, study=study, vault=vault, rng=rng, encrypts="encrypt" in used
        )
        self._plans = PlanCompiler(self._matcher, p, self._values.table)
        self._plans.enabled = compiled_plans
        # a file naming its FHIR release is read as upstream's parser reads it: an element that
        # release does not define is a processing error (without one, unknown keys are walked)
        self._plans.strict = ruleset.fhir_version is not None
        self._top_plans: dict[str, Plan] = {}

    def apply(
        self, resource: Mapping[str, Any], *, patient_key: str | None = None
    ) -> dict[str, Any]:
        """A pseudonymised copy of `resource` (the input is not modified)."""
        return self._run(resource, patient_key)[0]

    def anonymize(
        self, resource: Mapping[str, Any], *, patient_key: str | None = None
    ) -> AnonymizedResource:
        """Like `apply`, with the key id and study pseudonym that went into the result."""
        out, pseudonym = self._run(resource, patient_key)
        return AnonymizedResource(out, self.key_id, pseudonym)

    def _run(
        self, resource: Mapping[str, Any], patient_key: str | None
    ) -> tuple[dict[str, Any], Pseudonym | None]:
        if not (type(resource) is dict or isinstance(resource, Mapping)) or not isinstance(
            resource.get("resourceType"), str
        ):
            raise PseudonymisationError("invalid-input: not a FHIR resource object")
        if self._needs_patient and patient_key is None:
            raise PseudonymisationError("patient-key-missing: the rules need the patient key")
        run = RunState(patient_key, self._today or datetime.now(UTC).date())
        try:
            if self._unknown_rule is not None:
                raise _RuleError(
                    f"unknown-resource-type (rule {self._unknown_rule})", resource["resourceType"]
                )
            out = self._resource(resource, run, None, contained=False, top=True)
        except _RuleError as failure:
            if self.ruleset.processing_errors == "raise":
                raise PseudonymisationError(str(failure)) from None
            emptied: dict[str, Any] = {"resourceType": resource["resourceType"]}
            add_security_labels(emptied, REDACTED)
            return emptied, None
        assert out is not None
        return out, run.pseudonym

    # -- the walk --------------------------------------------------------------------------

    def _resource(
        self,
        obj: Mapping[str, Any],
        run: RunState,
        inherited: Rule | None,
        *,
        contained: bool,
        top: bool,
    ) -> dict[str, Any] | None:
        resource_type = obj["resourceType"]
        plan = self._top_plans.get(resource_type) if top and inherited is None else None
        if plan is not None:  # the usual case, decided once per resource type
            run.flags = 0
            out: dict[str, Any] = {"resourceType": resource_type}
            self._root_id(obj, plan, run)
            self._walk(out, obj, plan, run)
            flags = run.flags
            return with_security_labels(out, flags) if flags else out
        if not known_resource_type(resource_type):
            raise _RuleError("unknown-resource-type", "resource")
        root = self._matcher.root(resource_type)
        state, match = self._resolve(root, obj, resource_type)
        rule = _first(inherited, match)
        saved, run.flags = run.flags, 0
        out = {"resourceType": resource_type}
        if (
            top
            and inherited is None
            and not root.pending
            and (rule is None or rule.method != "substitute")
        ):
            self._top_plans[resource_type] = self._plans.plan(
                state, root.info.type_key, rule, resource_type, top
            )
        if rule is not None and rule.method == "substitute":
            replaced = self._substitute(obj, root.info, state, rule, run, resource_type)
            if type(replaced) is dict:
                out.update((k, v) for k, v in replaced.items() if k != "resourceType")
            run.flags |= SUBSTITUTED
        else:
            plan = self._plans.plan(state, root.info.type_key, rule, resource_type, top)
            if top:
                self._root_id(obj, plan, run)
            self._walk(out, obj, plan, run)
        flags = run.flags
        run.flags = saved | flags
        # a nested resource keeps its resourceType even when every element went (upstream)
        if flags and not contained:
            return with_security_labels(out, flags)
        return out

    def _resolve(self, entry: Entry, value: Any, where: str) -> tuple[int, Rule | None]:
        if not entry.pending:
            return entry.state, entry.match
        try:
            return self._matcher.resolve(entry, value)
        except PredicateFailedError:
            raise _RuleError("predicate-failed", where) from None

    def _root_id(self, obj: Mapping[str, Any], plan: Plan, run: RunState) -> None:
        value = obj.get("id")
        if not isinstance(value, str):
            return
        entry = plan.id_entry
        if entry is None:
            entry = plan.id_entry = plan.entry("id")
        _state, match = self._resolve(entry, value, obj["resourceType"])
        id_rule = _first(plan.rule, match)
        run.id_input = run.id_final = value
        if id_rule is not None:
            run.id_rank = id_rule.index
            final = self._primitive(id_rule, value, entry.info, obj["resourceType"], run)
            run.id_final = final if isinstance(final, str) else ""

    def _fill(  # noqa: PLR0917 - internal, called positionally on the hot path
        self,
        out: dict[str, Any],
        obj: Mapping[str, Any],
        type_key: str | None,
        state: int,
        rule: Rule | None,
        run: RunState,
        parent_type: str,
        top: bool = False,
    ) -> None:
        self._walk(out, obj, self._plans.plan(state, type_key, rule, parent_type, top), run)

    def _walk(self, out: dict[str, Any], obj: Mapping[str, Any], plan: Plan, run: RunState) -> None:
        """Fill `out` with the anonymized children of `obj`, following `plan` key by key."""
        aligned: list[str] | None = None
        walk = self._walk
        system = self._pseudonym_system
        for key, value in obj.items():
            action = plan[key]
            kind = action[0]
            kind_of_value = type(value)
            if kind_of_value is str:
                if kind == COPY:
                    if value:
                        out[key] = value  # the common case: a string no rule reaches, or kept
                    continue
                if kind == DROP:
                    if value:
                        run.flags |= REDACTED
                    continue
            if kind == PENDING and kind_of_value is not list:
                action = self._settle(action, value, plan)
                kind = action[0]
            if kind_of_value is dict and kind < GENERAL:
                child = action[3]
                if child is None:
                    new = self._item(action, value, plan, run)
                    if new is not None:
                        out[key] = [new] if action[2].repeats else new
                else:
                    sub = shortcut(value, child, run, system) if child.tries > 0 else None
                    if sub is None:
                        sub = {}
                        walk(sub, value, child, run)
                    if sub:
                        out[key] = [sub] if action[2].repeats else sub
                continue
            if kind == GENERAL:
                if key == "resourceType":
                    continue
                if plan.top and key == "id" and run.id_rank < (1 << 30):
                    if run.id_final:
                        out[key] = run.id_final  # computed first, by _root_id
                    continue
                if aligned is None:
                    aligned = []
                self._general_key(out, obj, key, value, plan, run, aligned)
                continue
            if kind_of_value is list:
                items: list[Any] = []
                keep_slots = (
                    bool(value) and type(value[0]) is not dict and type(obj.get("_" + key)) is list
                )
                child = action[3] if kind != PENDING else None
                for item in value:
                    if child is not None and type(item) is dict:
                        new = shortcut(item, child, run, system) if child.tries > 0 else None
                        if new is None:
                            new = {}
                            walk(new, item, child, run)
                        if not new:
                            if not keep_slots:
                                continue
                            new = None
                        elif new.get("system") == system and new in items:
                            continue
                    elif kind < CALL and type(item) is not dict:  # COPY or DROP, inline
                        if item is None or item == "" or type(item) is list:
                            new = None
                        elif kind == COPY:
                            new = item
                        else:
                            run.flags |= REDACTED
                            new = None
                        if new is None and not keep_slots:
                            continue
                    else:
                        new = self._item(action, item, plan, run)
                        if new is None:
                            if not keep_slots:
                                continue
                        elif type(new) is dict and new.get("system") == system and new in items:
                            continue
                    items.append(new)
                if keep_slots:
                    out[key] = items
                    if aligned is None:
                        aligned = []
                    aligned.append(key)
                elif items:
                    out[key] = items
            elif value is None or value == "":
                continue
            elif kind == COPY:
                out[key] = value
            elif kind == DROP:
                run.flags |= REDACTED
            else:
                rule, method = action[1], action[6]
                assert rule is not None
                assert method is not None
                try:
                    new = method(rule, value, action[2], plan.parent_type, run)
                except m.TransformError as error:
                    raise _RuleError(
                        f"{error.code} (rule {rule.index})", f"{plan.parent_type}.{action[2].name}"
                    ) from None
                if new is not None:
                    out[key] = new
        if aligned:
            for key in aligned:
                prune_aligned(out, key)

    def _settle(self, action: Action, value: Any, plan: Plan) -> Action:
        """The settled action of a PENDING key for this value (its predicates evaluated)."""
        entry = action[4]
        assert entry is not None
        try:
            state, match = self._matcher.resolve(entry, value)
        except PredicateFailedError:
            raise _RuleError("predicate-failed", entry.info.name) from None
        outcomes = action[5]
        assert outcomes is not None
        settled = outcomes.get((state, -1 if match is None else id(match)))
        if settled is None:
            settled = self._plans.resolved(plan, action, state, match)
        return settled

    def _item(self, action: Action, value: Any, plan: Plan, run: RunState) -> Any:
        """What `_value` returns for one value (a list item or an object) under `action`."""
        if action[0] == PENDING:
            action = self._settle(action, value, plan)
        kind = type(value)
        if kind is dict:
            child = action[3]
            if child is None:
                assert action[4] is not None
                return self._value(action[4], value, plan.rule, run, plan.parent_type)
            new: dict[str, Any] = {}
            self._walk(new, value, child, run)
            return new or None
        if value is None or kind is list or value == "":
            return None
        code = action[0]
        if code == COPY:
            return value
        if code == DROP:
            run.flags |= REDACTED
            return None
        rule = action[1]
        assert rule is not None
        return self._primitive(rule, value, action[2], plan.parent_type, run)

    def _general_key(  # noqa: PLR0917 - internal, called positionally on the hot path
        self,
        out: dict[str, Any],
        obj: Mapping[str, Any],
        key: str,
        value: Any,
        plan: Plan,
        run: RunState,
        aligned: list[str],
    ) -> None:
        """One child the plan leaves to the general code (see `plan.GENERAL`)."""
        matcher = self._matcher
        type_key, state, rule = plan.type_key, plan.state, plan.rule
        fields = matcher.fields(state, type_key)
        if key[0] == "_":
            self._extension(out, obj, key, value, fields, type_key, state, rule, run, aligned)
            return
        if key == "resourceType":
            return
        entry = fields.get(key) or matcher.entry(fields, state, type_key, key)
        if self._plans.strict and type_key is not None and is_unknown(entry.info):
            # upstream's parser refuses an element its FHIR release does not define
            raise _RuleError("unknown-element", plan.parent_type)
        if rule is None and entry.match is None and not entry.pending and type(value) is str:
            if value:
                out[key] = value  # the common case: a primitive no rule reaches
            return
        if plan.top and key == "id" and run.id_rank < (1 << 30):
            if run.id_final:
                out[key] = run.id_final
            return
        parent_type = plan.parent_type
        if type(value) is list:
            items: list[Any] = []
            keep_slots = (
                bool(value) and type(value[0]) is not dict and type(obj.get("_" + key)) is list
            )
            for item in value:
                new = self._value(entry, item, rule, run, parent_type)
                if new is None and not keep_slots:
                    continue
                if (
                    type(new) is dict
                    and new.get("system") == self._pseudonym_system
                    and new in items
                ):
                    continue
                items.append(new)
            if keep_slots:
                out[key] = items
                aligned.append(key)
            elif items:
                out[key] = items
        else:
            new = self._value(entry, value, rule, run, parent_type)
            if new is not None:
                # a single object where FHIR has a list is written as FHIR JSON has it (upstream)
                out[key] = [new] if type(new) is dict and entry.info.repeats else new

    def _extension(  # noqa: PLR0917 - internal, called positionally on the hot path
        self,
        out: dict[str, Any],
        obj: Mapping[str, Any],
        key: str,
        value: Any,
        fields: dict[str, Entry],
        type_key: str | None,
        state: int,
        rule: Rule | None,
        run: RunState,
        aligned: list[str],
    ) -> None:
        """The `_x` object(s) of primitive `x`: walked as the children of node `x`."""
        base = key[1:]
        if not base:
            return
        entry = fields.get(base) or self._matcher.entry(fields, state, type_key, base)
        base_value = obj.get(base)
        if type(value) is list:
            bases = base_value if type(base_value) is list else []
            items = []
            for idx, ext in enumerate(value):
                node_value = bases[idx] if idx < len(bases) else None
                items.append(self._primitive_extension(entry, node_value, ext, rule, run))
            out[key] = items
            if type(base_value) is list:
                if base not in aligned:
                    aligned.append(base)
            elif not any(items):
                del out[key]
        else:
            new = self._primitive_extension(entry, base_value, value, rule, run)
            if new:
                out[key] = new

    def _primitive_extension(
        self, entry: Entry, node_value: Any, ext: Any, rule: Rule | None, run: RunState
    ) -> dict[str, Any] | None:
        if type(ext) is not dict:
            return None
        state, match = self._resolve(entry, node_value, entry.info.name)
        node_rule = _first(rule, match)
        if node_rule is not None and node_rule.method in ("substitute", "pseudonymize"):
            return None
        new: dict[str, Any] = {}
        self._fill(new, ext, PRIMITIVE_EXTENSION_KEY, state, node_rule, run, entry.info.fhir_type)
        return new or None

    def _value(
        self, entry: Entry, value: Any, inherited: Rule | None, run: RunState, parent_type: str
    ) -> Any:
        if entry.pending:
            state, match = self._resolve(entry, value, entry.info.name)
        else:
            state, match = entry.state, entry.match
        rule = (
            match
            if match is not None and (inherited is None or match.index < inherited.index)
            else inherited
        )
        info = entry.info
        if type(value) is dict:
            if info.is_resource and isinstance(value.get("resourceType"), str):
                contained = info.name == "contained"
                return self._resource(value, run, rule, contained=contained, top=False)
            if rule is not None and rule.method not in WALKED:
                return self._complex(value, info, state, rule, run, parent_type)
            new: dict[str, Any] = {}
            self._fill(new, value, info.type_key, state, rule, run, info.fhir_type)
            return new or None
        if value is None or value == "" or type(value) is list:
            return None
        if rule is None:
            return value
        return self._primitive(rule, value, info, parent_type, run)

    def _complex(  # noqa: PLR0917 - internal, called positionally on the hot path
        self,
        value: dict[str, Any],
        info: ElementInfo,
        state: int,
        rule: Rule,
        run: RunState,
        parent: str,
    ) -> Any:
        method = rule.method
        if method == "substitute":
            run.flags |= SUBSTITUTED
            return prune_value(self._substitute(value, info, state, rule, run, parent))
        if method == "generalize":
            raise _RuleError(f"generalize-needs-primitive (rule {rule.index})", info.name)
        if method == "pseudonymize" and info.fhir_type == "Identifier":
            assert self.study is not None
            run.flags |= PSEUDED
            return {"system": self._pseudonym_system, "value": self._values.pseudonym(run)}
        new: dict[str, Any] = {}
        if method == "perturb" and "Quantity" in type_family(info.fhir_type):
            fields = self._matcher.fields(state, info.type_key)
            entry = fields.get("value") or self._matcher.entry(
                fields, state, info.type_key, "value"
            )
            number = value.get("value")
            _s, own = self._resolve(entry, number, info.name)
            if number is not None and (own is None or own.index >= rule.index):
                round_to = 2 if rule.round_to is None else rule.round_to
                try:
                    perturbed = self._values.perturb_number(rule, number, round_to, info)
                except m.TransformError as error:
                    raise _RuleError(
                        f"{error.code} (rule {rule.index})", f"{info.name}.value"
                    ) from None
                run.flags |= PERTURBED
                # upstream marks the whole Quantity visited: the rest is kept as it is
                shadow = self._shadow_keep(rule)
                self._fill(new, value, info.type_key, state, shadow, run, info.fhir_type)
                new["value"] = perturbed
                return new
        self._fill(new, value, info.type_key, state, rule, run, info.fhir_type)
        return new or None

    def _shadow_keep(self, rule: Rule) -> Rule:
        found = self._shadows.get(rule.index)
        if found is None:
            found = self._shadows[rule.index] = Rule(rule.index, rule.path, "keep", rule.selector)
        return found

    # -- methods on primitive values -------------------------------------------------------

    def _primitive(
        self, rule: Rule, value: Any, info: ElementInfo, parent: str, run: RunState
    ) -> Any:
        try:
            return self._values.table[rule.method](rule, value, info, parent, run)
        except m.TransformError as error:
            raise _RuleError(f"{error.code} (rule {rule.index})", f"{parent}.{info.name}") from None

    # -- substitute on complex nodes (upstream's merge) -------------------------------------

    def _earlier(self, value: Any, entry: Entry, rule: Rule) -> bool:
        """Whether a node or anything below it belongs to a rule before `rule`."""
        _state, match = self._resolve(entry, value, entry.info.name)
        if match is not None and match.index < rule.index:
            return True
        if type(value) is not dict or entry.info.is_resource:
            return False
        fields = self._matcher.fields(_state, entry.info.type_key)
        for key, child in value.items():
            if key[0] == "_" or key == "resourceType":
                continue
            sub = fields.get(key) or self._matcher.entry(fields, _state, entry.info.type_key, key)
            for item in child if type(child) is list else [child]:
                if self._earlier(item, sub, rule):
                    return True
        return False

    def _substitute(  # noqa: PLR0917 - internal, called positionally on the hot path
        self, value: Any, info: ElementInfo, state: int, rule: Rule, run: RunState, parent: str
    ) -> Any:
        replacement = copy.deepcopy(rule.replace_with)
        return self._merge(value, info, state, replacement, rule, run, parent)

    def _merge(  # noqa: PLR0917 - internal, called positionally on the hot path
        self,
        value: Any,
        info: ElementInfo,
        state: int,
        replacement: Any,
        rule: Rule,
        run: RunState,
        parent: str,
    ) -> Any:
        if type(value) is not dict:
            if type(replacement) is dict:
                raise _RuleError(f"substitute-type-mismatch (rule {rule.index})", info.name)
            return replacement
        if replacement is not None and type(replacement) is not dict:
            raise _RuleError(f"substitute-type-mismatch (rule {rule.index})", info.name)
        wanted: dict[str, Any] = replacement or {}
        out: dict[str, Any] = {}
        fields = self._matcher.fields(state, info.type_key)
        children: dict[str, list[Any]] = {}
        for key, child in value.items():
            if key[0] != "_" and key != "resourceType":
                children[key] = child if type(child) is list else [child]
        for key in [*wanted, *(k for k in children if k not in wanted)]:
            if key[0] == "_" or key == "resourceType":
                out.setdefault(key, wanted[key])
                continue
            entry = fields.get(key) or self._matcher.entry(fields, state, info.type_key, key)
            targets = wanted.get(key)
            target_list = [] if targets is None else targets if type(targets) is list else [targets]
            used, kept = 0, []
            for item in children.get(key, []):
                child_state, match = self._resolve(entry, item, entry.info.name)
                if match is not None and match.index < rule.index:
                    kept.append(self._value(entry, item, None, run, info.fhir_type))
                    used += 1
                elif used < len(target_list):
                    kept.append(
                        self._merge(
                            item,
                            entry.info,
                            child_state,
                            target_list[used],
                            rule,
                            run,
                            info.fhir_type,
                        )
                    )
                    used += 1
                elif self._earlier(item, entry, rule):
                    dummy: dict[str, Any] | None = {} if type(item) is dict else None
                    kept.append(
                        self._merge(item, entry.info, child_state, dummy, rule, run, info.fhir_type)
                    )
            kept.extend(target_list[used:])
            if type(targets) is list or type(value.get(key)) is list:
                out[key] = kept
            elif kept:
                out[key] = kept[0]
        return out
