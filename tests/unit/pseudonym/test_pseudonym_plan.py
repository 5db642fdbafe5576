"""Compiled walk plans: they give exactly what the general path gives.

The property test builds FHIR-like resources (R4 and R5 shapes, Bundles, contained resources,
extensions, `_x` primitive extensions, empty values, unknown keys) and runs each through an
anonymizer with plans and one without (`compiled_plans=False`), under the shipped presets and
rule files that use every method, casts, where() predicates and precedence between a rule and
an earlier one on a descendant. `CAREMESH_PLAN_EXAMPLES` raises the example count (CI: 40).
"""

from __future__ import annotations

import os
import random
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caremesh.errors import PseudonymisationError
from caremesh.pseudonym import Anonymizer, InMemoryVault, RuleSet, load_preset, load_rules
from caremesh.pseudonym.automaton import Matcher
from caremesh.pseudonym.plan import CALL, COPY, DROP, PENDING, PlanCompiler
from caremesh.pseudonym.values import ValueMethods

EXAMPLES = int(os.environ.get("CAREMESH_PLAN_EXAMPLES") or 40)
TODAY = date(2026, 1, 15)
PARAMETERS = {
    "cryptoHashKey": "plan-test-hash",
    "dateShiftKey": "plan-test-shift",
    "dateShiftScope": "patient",
    "enablePartialDatesForRedact": True,
    "enablePartialAgesForRedact": True,
    "enablePartialZipCodesForRedact": True,
}


def _rule(path: str, method: str, **settings: Any) -> dict[str, Any]:
    return {"path": path, "method": method, **settings}


CUSTOM_RULES: list[list[dict[str, Any]]] = [
    [
        _rule("Patient.name.family", "keep"),
        _rule("nodesByType('HumanName')", "redact"),
        _rule("nodesByType('Extension').where(url = 'http://ex.org/secret')", "redact"),
        _rule("nodesByType('Reference').where(reference.startsWith('Patient/'))", "pseudonymize"),
        _rule("nodesByType('Reference').reference", "cryptoHash"),
        _rule(
            "nodesByName('postalCode')",
            "generalize",
            cases={"$this.length() >= 2": "$this.substring(0, 2)"},
        ),
        _rule("Observation.value as Quantity", "perturb", span=4),
        _rule("nodesByType('Coding').where(code = 'x1').display", "keep"),
        _rule("nodesByType('Coding').display", "redact"),
        _rule("nodesByType('dateTime') | nodesByType('date')", "dateshift"),
    ],
    [
        _rule("nodesByType('Address').country", "keep"),
        _rule("nodesByType('Address')", "substitute", replaceWith={"city": "N", "line": ["x"]}),
        _rule("Patient.gender", "substitute", replaceWith="unknown"),
        _rule("Resource.id", "cryptoHash"),
        _rule("nodesByName('resource')", "keep"),
        _rule("nodesByType('Identifier')", "pseudonymize"),
        _rule("nodesByType('Quantity').value", "perturb", span=1, rangeType="proportional"),
        _rule("nodesByType('string')", "cryptoHash"),
        _rule("nodesByType('Period')", "redact"),
    ],
]


def _rulesets() -> list[tuple[str, RuleSet]]:
    out = [(name, load_preset(name)) for name in ("gdpr-research", "hipaa-safe-harbor")]
    for n, rules in enumerate(CUSTOM_RULES):
        for version in (None, "R4"):
            config: dict[str, Any] = {"fhirPathRules": rules, "processingErrors": "raise"}
            if version:
                config["fhirVersion"] = version
            out.append((f"custom{n}-{version}", load_rules(config)))
    return out


RULESETS = _rulesets()


def _pair(ruleset: RuleSet, seed: int) -> tuple[Anonymizer, Anonymizer]:
    def one(compiled: bool) -> Anonymizer:
        return Anonymizer(
            ruleset,
            parameters=PARAMETERS,
            study="plan-study",
            vault=InMemoryVault(b"p" * 32),
            today=TODAY,
            rng=random.Random(seed),
            compiled_plans=compiled,
        )

    return one(True), one(False)


def _outcome(anonymizer: Anonymizer, resource: dict[str, Any]) -> bytes:
    try:
        result = anonymizer.anonymize(resource, patient_key="pk-1")
    except PseudonymisationError as error:
        return f"error: {error}".encode()
    return orjson.dumps([result.resource, result.pseudonym])  # key order included


# -- generated resources --------------------------------------------------------------------

_text = st.sampled_from(["", "a", "home", "Patient/p1", "Organization/o1", "69007", "x1", "é"])
_date = st.sampled_from(["2020-02-03", "1925-01-01", "2021-03", "2024-05-06T07:08:09Z", "bad"])
_scalar = st.one_of(_text, _date, st.none(), st.booleans(), st.integers(-5, 120), st.floats(0, 99))


def _maybe_list(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(item, st.lists(item, max_size=3))


def _obj(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with a random subset of `fields` (in a random order)."""
    keys = sorted(fields)
    return st.lists(st.sampled_from(keys), unique=True, max_size=len(keys)).flatmap(
        lambda chosen: st.fixed_dictionaries({k: fields[k] for k in chosen})
    )


_extension = _obj(
    {
        "url": st.sampled_from(["http://ex.org/secret", "http://ex.org/other"]),
        "valueString": _text,
        "valueDate": _date,
    }
)
_primitive_ext = _obj({"id": _text, "extension": st.lists(_extension, max_size=2)})
_coding = _obj(
    {
        "system": _text,
        "code": st.sampled_from(["x1", "x2", ""]),
        "display": _text,
        "extension": st.lists(_extension, max_size=1),
    }
)
_concept = _obj({"coding": st.lists(_coding, max_size=3), "text": _text})
_period = _obj({"start": _date, "end": _date})
_identifier = _obj(
    {
        "system": st.sampled_from(["urn:caremesh:study:plan-study:pseudonym", "urn:oid:1.2"]),
        "value": _text,
        "period": _period,
    }
)
_reference = _obj({"reference": _text, "display": _text, "identifier": _identifier})
_address = _obj(
    {
        "use": _text,
        "line": st.lists(_text, max_size=2),
        "city": _text,
        "postalCode": _text,
        "country": _text,
        "_city": _primitive_ext,
    }
)
_name = _obj(
    {
        "family": _text,
        "given": st.lists(_text, max_size=3),
        "_given": st.lists(st.one_of(st.none(), _primitive_ext), max_size=3),
        "period": _period,
    }
)
_quantity = _obj({"value": st.one_of(st.integers(0, 200), st.floats(0, 200)), "unit": _text})
_common = {
    "id": _text,
    "meta": _obj({"profile": st.lists(_text, max_size=2), "lastUpdated": _date}),
    "extension": st.lists(_extension, max_size=2),
    "text": _obj({"status": _text, "div": _text}),
    "unknownKey": st.one_of(_scalar, _obj({"postalCode": _text, "a": _text})),
}
_patient = _obj(
    {
        **_common,
        "identifier": _maybe_list(_identifier),
        "name": st.lists(_name, max_size=2),
        "gender": _text,
        "birthDate": _date,
        "_birthDate": _primitive_ext,
        "address": st.lists(_address, max_size=2),
        "generalPractitioner": st.lists(_reference, max_size=2),
        "active": _scalar,
    }
).map(lambda r: {"resourceType": "Patient", **r})
_observation = _obj(
    {
        **_common,
        "status": _text,
        "code": _concept,
        "category": st.lists(_concept, max_size=2),
        "subject": _reference,
        "effectiveDateTime": _date,
        "valueQuantity": _quantity,
        "valueString": _text,
        "performer": st.lists(_reference, max_size=2),
        "note": st.lists(_obj({"text": _text, "time": _date}), max_size=1),
        "contained": st.lists(_patient, max_size=1),
    }
).map(lambda r: {"resourceType": "Observation", **r})
_encounter = _obj(
    {
        **_common,
        "class": st.one_of(_coding, st.lists(_concept, max_size=1)),  # R4 Coding, R5 list
        "period": _period,
        "actualPeriod": _period,
        "subject": _reference,
        "identifier": st.lists(_identifier, max_size=2),
    }
).map(lambda r: {"resourceType": "Encounter", **r})
_single = st.one_of(_patient, _observation, _encounter)
_bundle = st.lists(_single, max_size=3).map(
    lambda rs: {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(rs)],
    }
)
RESOURCES = st.one_of(_single, _single, _bundle)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(resources=st.lists(RESOURCES, min_size=1, max_size=4), seed=st.integers(0, 3))
def test_plans_give_what_the_general_path_gives(resources: list[dict[str, Any]], seed: int) -> None:
    for name, ruleset in RULESETS:
        compiled, general = _pair(ruleset, seed)
        for resource in resources:  # several per anonymizer: plans are reused once filled
            before = orjson.dumps(resource)
            fast, slow = _outcome(compiled, resource), _outcome(general, resource)
            assert fast == slow, name
            assert orjson.dumps(resource) == before, name


def test_plans_agree_on_the_bench_corpus_shapes() -> None:
    """The leaf shortcuts (plain copies, redacted leaves) on resources seen many times."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:oid:1.2", "value": "123"}],
        "name": [{"family": "F", "given": ["A", "B"]}],
        "telecom": [{"system": "phone", "value": "0102"}],
        "birthDate": "1975-06-15",
        "address": [{"use": "home", "postalCode": "69007", "country": "FR"}],
    }
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "W"}]},
        "subject": {"reference": "Patient/p1", "identifier": {"value": "123"}},
        "valueQuantity": {"value": 70.5, "unit": "kg"},
    }
    pseudonym = {"system": "urn:caremesh:study:plan-study:pseudonym", "value": "x", "code": "x"}
    fed_back = [  # list items that carry the study pseudonym's system are deduplicated
        {"resourceType": "Patient", "identifier": [pseudonym, pseudonym]},
        {"resourceType": "Observation", "code": {"coding": [pseudonym, pseudonym]}},
    ]
    for name, ruleset in RULESETS:
        compiled, general = _pair(ruleset, 0)
        for _ in range(80):  # past the point where plans stop trying shortcuts that miss
            for resource in (patient, observation, *fed_back):
                assert _outcome(compiled, resource) == _outcome(general, resource), name


# -- the plans themselves -------------------------------------------------------------------


def _compiler(rules: list[dict[str, Any]]) -> PlanCompiler:
    ruleset = load_rules({"fhirPathRules": rules})
    params = ruleset.parameters
    values = ValueMethods(params, study=None, vault=None, rng=None, encrypts=False)
    return PlanCompiler(Matcher(ruleset), params, values.table)


def _name_plan(compiler: PlanCompiler) -> Any:
    root = compiler.matcher.root("Patient")
    patient = compiler.plan(root.state, root.info.type_key, root.match, "Patient", True)
    return patient["name"].child


@pytest.mark.parametrize(
    ("rules", "family", "given"),
    [
        (  # the earlier rule on a descendant wins over the later one on its ancestor
            [
                {"path": "Patient.name.family", "method": "keep"},
                {"path": "nodesByType('HumanName')", "method": "redact"},
            ],
            COPY,
            DROP,
        ),
        (  # the earlier ancestor rule covers the subtree
            [
                {"path": "nodesByType('HumanName')", "method": "redact"},
                {"path": "Patient.name.family", "method": "keep"},
            ],
            DROP,
            DROP,
        ),
        (
            [{"path": "Patient.name.family", "method": "cryptoHash"}],
            CALL,
            COPY,
        ),
    ],
)
def test_plan_actions_follow_first_match(
    rules: list[dict[str, Any]], family: int, given: int
) -> None:
    plan = _name_plan(_compiler(rules))
    assert plan["family"].kind == family
    assert plan["given"].kind == given


def test_where_predicates_stay_pending_and_settle_per_outcome() -> None:
    compiler = _compiler(
        [
            {"path": "Patient.name.where(use = 'official').family", "method": "redact"},
            {"path": "Patient.name.family", "method": "cryptoHash"},
        ]
    )
    root = compiler.matcher.root("Patient")
    patient = compiler.plan(root.state, root.info.type_key, root.match, "Patient", True)
    action = patient["name"]
    assert action.kind == PENDING
    assert action.entry is not None
    official = compiler.matcher.resolve(action.entry, {"use": "official", "family": "F"})
    other = compiler.matcher.resolve(action.entry, {"use": "usual", "family": "F"})
    settled_official = compiler.resolved(patient, action, *official)
    settled_other = compiler.resolved(patient, action, *other)
    assert settled_official.child is not None
    assert settled_other.child is not None
    assert settled_official.child["family"].kind == DROP
    assert settled_other.child["family"].kind == CALL
    assert compiler.resolved(patient, action, *official) is settled_official  # cached


def test_date_and_postal_code_redaction_keep_their_method() -> None:
    """redact is only short-cut where it always removes the value (not partial dates/zips)."""
    plan = _name_plan(_compiler([{"path": "nodesByType('HumanName')", "method": "redact"}]))
    period = plan["period"].child
    assert period is not None
    assert period["start"].kind == CALL
    assert plan["text"].kind == DROP
