"""The rule files shipped with caremesh, listed and loaded by name.

- `gdpr-research`: the research default (DESIGN §6). Removes the direct identifiers that the
  French research reference methodologies exclude: names, telecom and contacts' details, every
  identifier (NIR/INS, hospital patient numbers...) except the study pseudonym, address below
  the département (postal code cut to its first 2 digits; state and country kept), photos and
  attachments' content, narrative `text`, free-text notes and comments (Annotation, `comment`),
  and extensions; keeps the birth year only (none over 89); shifts every other date by a
  per-patient offset; hashes resource ids and references with the study key; keeps clinical
  codes and values. Needs a study, a vault and the patient key (`study_anonymizer`).
- `hipaa-safe-harbor`: the 18 identifiers of HIPAA Safe Harbor (45 CFR 164.514(b)(2)), written
  for this engine in the upstream format: names, geography below the state (3-digit ZIP kept,
  zeroed for the restricted ZCTAs), all elements of dates except the year (none over 89, ages
  over 89 removed), contact points, identifiers of every kind (record, plan, account, licence,
  device, vehicle), URLs and network addresses, photos and attachments, narrative and free
  text. Resource ids and references are replaced by keyed HMACs so that references still
  resolve; Safe Harbor only allows such codes when the key is never disclosed to recipients.
"""

from __future__ import annotations

from importlib import resources

import orjson

from caremesh.errors import ConfigurationError
from caremesh.pseudonym.ruleset import RuleSet, load_rules

_PACKAGE = "caremesh.pseudonym"
_FOLDER = "rules"


def preset_names() -> list[str]:
    """Names of the shipped rule files (without `.json`), sorted."""
    folder = resources.files(_PACKAGE).joinpath(_FOLDER)
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )


def load_preset(name: str) -> RuleSet:
    """Load and validate a shipped rule file by name (`gdpr-research`, `hipaa-safe-harbor`)."""
    if name not in preset_names():
        raise ConfigurationError(f"unknown rule preset {name!r}; known: {preset_names()}")
    data = resources.files(_PACKAGE).joinpath(_FOLDER, f"{name}.json").read_bytes()
    return load_rules(orjson.loads(data))


def presets() -> dict[str, RuleSet]:
    """Every shipped rule file, loaded, by name."""
    return {name: load_preset(name) for name in preset_names()}
