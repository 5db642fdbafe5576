"""Pseudonymisation of FHIR resources for research streams: rule engine, keys, vault, presets.

The engine reads the configuration format of Microsoft's open-source FHIR anonymizer
(FHIR-Tools-for-Anonymization: `fhirVersion`, `processingErrors`, `fhirPathRules` tried in
file order, `parameters`) and follows its semantics as restated in DESIGN §6, on R4/R4B and R5
JSON, single resources, Bundle entries and contained resources. Element types come from the
fhir.resources models (`elements`); the supported FHIRPath subset is listed in `paths`.

    ruleset = load_rules("my-rules.json")          # or load_preset("gdpr-research")
    anonymizer = Anonymizer(ruleset, parameters={"cryptoHashKey": ..., "dateShiftKey": ...})
    out = anonymizer.apply(resource, patient_key=key)   # a new dict; the input is untouched

Upstream rule files run as they are (a UTF-8 BOM is skipped) with upstream's semantics; with
their own keys (`Anonymizer(load_rules(path))`, the CLI's `--keys rule-file`) they give
upstream's output. `Bundle.entry.fullUrl` is transformed like a `Reference.reference` (id part
only), so references keep resolving to entries. None of the extensions below is triggered by a
file that does not spell it out.

caremesh extensions to the upstream format (files that use them do not run upstream):

- `parameters.dateShiftScope: "patient"`: the offset is HMAC-SHA256(dateShiftKey, patient key)
  mapped to [-50, +50] days, so one patient's timeline stays consistent across resources; the
  patient key is passed to `apply`. Scopes `file` and `folder` are not supported.
- per-study keys: `study_anonymizer(study, master_key, ruleset)` derives cryptoHash, date-shift,
  encryption and pseudonym keys with HKDF-SHA256 (info = study name ‖ key purpose), so two
  studies' outputs cannot be linked;
- key ids and rotation: a `Keyring` of master key versions (`KeyId`); the current version is
  used for new data, older ones stay usable; `Anonymizer.anonymize` returns the key id with
  the resource;
- method `pseudonymize`: replaces the patient's identity with the study pseudonym from a
  `PseudonymVault` (`pseudonym_for(study, patient_key)`): an Identifier becomes
  `{system: urn:caremesh:study:<study>:pseudonym, value: <pseudonym>}` (duplicates dropped), a
  Reference.reference keeps its type prefix (`Patient/<pseudonym>`), any other primitive
  becomes the pseudonym. It adds the security label PSEUDED (after GENERALIZED).
- a parent rule that selects a nested resource node (e.g. `nodesByName('resource')`) applies
  to that resource's whole tree before the nested resource's own rules run.

The hot modules run compiled when a fresh mypyc build is present (`caremesh.pseudonym.native`;
`_compiled`
is imported first so that it decides before they load).
"""

from caremesh.pseudonym import _compiled  # noqa: F401 - before the engine modules load
from caremesh.pseudonym.engine import AnonymizedResource, Anonymizer
from caremesh.pseudonym.keys import Keyring, StudyKeys, derive_key, study_keys
from caremesh.pseudonym.output import LABEL_SYSTEM
from caremesh.pseudonym.presets import load_preset, preset_names, presets
from caremesh.pseudonym.ruleset import Parameters, Rule, RuleSet, load_rules
from caremesh.pseudonym.study import study_anonymizer
from caremesh.pseudonym.values import PSEUDONYM_SYSTEM
from caremesh.pseudonym.vault import InMemoryVault, PseudonymVault

__all__ = [
    "LABEL_SYSTEM",
    "PSEUDONYM_SYSTEM",
    "AnonymizedResource",
    "Anonymizer",
    "InMemoryVault",
    "Keyring",
    "Parameters",
    "PseudonymVault",
    "Rule",
    "RuleSet",
    "StudyKeys",
    "derive_key",
    "load_preset",
    "load_rules",
    "preset_names",
    "presets",
    "study_anonymizer",
    "study_keys",
]
