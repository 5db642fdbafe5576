"""Consent policy built from settings: the defaults per purpose and the labels needing a permit."""

from __future__ import annotations

from caremesh.consent import ConsentPolicy, Outcome
from caremesh.settings import ConsentSettings, StudySettings


def _outcome(text: str) -> Outcome:
    # Settings accept only "permit" or "deny" (`settings.ConsentOutcome`); a typo is refused there.
    return {"permit": Outcome.PERMIT, "deny": Outcome.DENY}[text]


def consent_policy(settings: ConsentSettings, study: StudySettings | None = None) -> ConsentPolicy:
    """The policy for care flows, or for one study (its purpose takes the study's default)."""
    defaults = {code: _outcome(value) for code, value in settings.defaults.items()}
    if study is not None:
        defaults[study.purpose] = _outcome(study.consent_default)
    return ConsentPolicy(
        defaults=defaults,
        fallback=_outcome(settings.fallback),
        restricted_labels=frozenset(settings.restricted_labels),
        sensitive_labels=frozenset(settings.sensitive_labels),
    )
