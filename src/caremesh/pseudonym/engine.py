"""The anonymizer: applies a RuleSet to a FHIR resource, its Bundle entries and contained ones.

Semantics are those of FHIR-Tools-for-Anonymization as restated in DESIGN §6. Every node gets
the first rule (file order) that selects it or one of its ancestors, and that rule's method is
applied to it; the whole pass is one walk over the input that builds a new, pruned tree (the
input is never modified). Nested resources are anonymized as resources of their own, with
their own rules; a parent rule that selects a nested resource covers all of it. Security
labels follow upstream's mapping: redact, partial date/age redaction and a date-shift that
falls back to redaction → REDACTED; partial zip code → ABSTRED; cryptoHash → CRYTOHASH;
encrypt → MASKED; perturb and date-shift → PERTURBED; substitute → SUBSTITUTED; generalize →
GENERALIZED; caremesh's pseudonymize → PSEUDED. A contained resource's labels go to its
container; a Bundle also carries its entries' labels.

Order-dependent details kept from upstream: the resource-scope date shift uses the root
resource's id as the rules before the dateshift rule left it (so `Resource.id` cryptoHash
listed first shifts by the hashed id); substitution keeps the nodes that earlier rules
processed. Difference: where() predicates see input values.
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
from caremesh.pseudonym.automaton import Entry, Matcher, PredicateFailedError
from caremesh.pseudonym.elements import PRIMITIVE_EXTENSION_KEY, ElementInfo, type_family
from caremesh.pseudonym.output import (
    PERTURBED,
    PSEUDED,
    REDACTED,
    SUBSTITUTED,
    add_security_labels,
    prune_aligned,
    prune_value,
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
    ) -> None:
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
        self._matcher = Matcher(ruleset)
        self._shadows: dict[int, Rule] = {}
        self._pseudonym_system = PSEUDONYM_SYSTEM.format(study=study or "")
        self._values = ValueMethods(
            p, study=study, vault=vault, rng=rng, encrypts="encrypt" in used
        )

    def apply(
        self, resource: Mapping[str, Any], *, patient_key: str | None = None
    ) -> dict[str, Any]:
        """A pseudonymised copy of `resource` (the input is not modified)."""
        return self.anonymize(resource, patient_key=patient_key).resource

    def anonymize(
        self, resource: Mapping[str, Any], *, patient_key: str | None = None
    ) -> AnonymizedResource:
        """Like `apply`, with the key id and study pseudonym that went into the result."""
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            raise PseudonymisationError("invalid-input: not a FHIR resource object")
        if self._needs_patient and patient_key is None:
            raise PseudonymisationError("patient-key-missing: the rules need the patient key")
        run = RunState(patient_key, self._today or datetime.now(UTC).date())
        try:
            out = self._resource(resource, run, None, contained=False, top=True)
        except _RuleError as failure:
            if self.ruleset.processing_errors == "raise":
                raise PseudonymisationError(str(failure)) from None
            emptied: dict[str, Any] = {"resourceType": resource["resourceType"]}
            add_security_labels(emptied, REDACTED)
            return AnonymizedResource(emptied, self.key_id, None)
        assert out is not None
        return AnonymizedResource(out, self.key_id, run.pseudonym)

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
        root = self._matcher.root(resource_type)
        state, match = self._resolve(root, obj, resource_type)
        rule = _first(inherited, match)
        saved, run.flags = run.flags, 0
        out: dict[str, Any] = {"resourceType": resource_type}
        if rule is not None and rule.method == "substitute":
            replaced = self._substitute(obj, root.info, state, rule, run, resource_type)
            if type(replaced) is dict:
                out.update((k, v) for k, v in replaced.items() if k != "resourceType")
            run.flags |= SUBSTITUTED
        else:
            if top:
                self._root_id(obj, root.info.type_key, state, rule, run)
            self._fill(out, obj, root.info.type_key, state, rule, run, resource_type, top)
        flags = run.flags
        run.flags = saved | flags
        if not top and len(out) == 1:
            return None
        if flags and not contained:
            add_security_labels(out, flags)
        return out

    def _resolve(self, entry: Entry, value: Any, where: str) -> tuple[int, Rule | None]:
        if not entry.pending:
            return entry.state, entry.match
        try:
            return self._matcher.resolve(entry, value)
        except PredicateFailedError:
            raise _RuleError("predicate-failed", where) from None

    def _root_id(
        self,
        obj: Mapping[str, Any],
        type_key: str | None,
        state: int,
        rule: Rule | None,
        run: RunState,
    ) -> None:
        value = obj.get("id")
        if not isinstance(value, str):
            return
        fields = self._matcher.fields(state, type_key)
        entry = fields.get("id") or self._matcher.entry(fields, state, type_key, "id")
        _state, match = self._resolve(entry, value, obj["resourceType"])
        id_rule = _first(rule, match)
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
        matcher = self._matcher
        fields = matcher.fields(state, type_key)
        aligned: list[str] = []
        for key, value in obj.items():
            if key[0] == "_":
                self._extension(out, obj, key, value, fields, type_key, state, rule, run, aligned)
                continue
            if key == "resourceType":
                continue
            entry = fields.get(key) or matcher.entry(fields, state, type_key, key)
            if rule is None and entry.match is None and not entry.pending and type(value) is str:
                if value:
                    out[key] = value  # the common case: a primitive no rule reaches
                continue
            if top and key == "id" and run.id_rank < (1 << 30):
                if run.id_final:
                    out[key] = run.id_final
                continue
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
                    out[key] = new
        for key in aligned:
            prune_aligned(out, key)

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
            if rule is not None and rule.method not in ("keep", "redact", "cryptoHash"):
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
                perturbed = self._values.perturb_number(rule, number, round_to, info)
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
