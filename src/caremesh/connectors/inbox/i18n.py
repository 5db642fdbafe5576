"""The inbox's message catalogue (French, the territory's default, and English) and its choice.

Every people-facing text of the inbox pages is a key of `MESSAGES`; each language has the same
keys (a unit test checks it). The language of a request is, in order: the `lang` query
parameter (the page's language switch), the `caremesh_inbox_lang` cookie it sets, the browser's
`Accept-Language` (RFC 9110 §12.5.4, highest q first), then French. Placeholders in a message
are `{name}`, filled by the page's script. Dates follow the language's `intl_locale`
(a BCP 47 tag for the browser's `Intl.DateTimeFormat`).
"""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["fr", "en"]
LANGS: Final[tuple[Lang, ...]] = ("fr", "en")
DEFAULT_LANG: Final[Lang] = "fr"
LANG_COOKIE: Final = "caremesh_inbox_lang"
LANG_PARAM: Final = "lang"

MESSAGES: Final[dict[Lang, dict[str, str]]] = {
    "fr": {
        "intl_locale": "fr-FR",
        "language_name": "Français",
        "switch_label": "Langue",
        "product": "caremesh",
        "subtitle": "boîte de coordination des soins",
        "login_title": "Connexion · boîte caremesh",
        "inbox_title": "Alertes · boîte caremesh",
        "username": "Identifiant",
        "password": "Mot de passe",
        "sign_in": "Se connecter",
        "sign_out": "Se déconnecter",
        "error_too_large": "Le formulaire était trop volumineux.",
        "error_expired": "Le formulaire de connexion a expiré ; veuillez vous reconnecter.",
        "error_refused": "Identifiant inconnu ou mot de passe erroné.",
        "filters": "Filtrer les alertes",
        "status": "Statut",
        "status_open": "Ouverte",
        "status_closed": "Clôturée",
        "all": "Toutes",
        "pathway": "Parcours",
        "all_pathways": "Tous les parcours",
        "severity": "Gravité",
        "all_severities": "Toutes les gravités",
        "severity_critical": "Critique",
        "severity_high": "Élevée",
        "severity_medium": "Moyenne",
        "severity_low": "Faible",
        "connecting": "connexion…",
        "live": "en direct",
        "reconnecting": "reconnexion…",
        "unavailable": "indisponible",
        "alerts": "Alertes",
        "empty": "Aucune alerte ne correspond à ces filtres.",
        "rule": "Règle",
        "raised": "Émise",
        "patient": "Patient",
        "note_optional": "Note (facultative)",
        "acknowledge": "Accuser réception",
        "dismiss": "Écarter",
        "closed_ack": "Réception accusée par {by} le {at}",
        "closed_dismiss": "Écartée par {by} le {at}",
        "announce_new": "Nouvelle alerte ({severity}) : {title}",
        "announce_ack": "Réception accusée : {title}",
        "announce_dismiss": "Écartée : {title}",
        "error_already_closed": "Déjà clôturée.",
        "error_not_saved": "Non enregistré, veuillez réessayer.",
        "error_unreachable": "Non enregistré : la boîte est injoignable.",
        "context_label": "Informations sur le patient",
        "name": "Nom",
        "sex": "Sexe",
        "sex_male": "Homme",
        "sex_female": "Femme",
        "sex_other": "Autre",
        "sex_unknown": "Inconnu",
        "age": "Âge",
        "age_years": "{age} ans",
        "phone": "Téléphone",
        "care_team": "Équipe de soins",
        "withheld_consent": "Le consentement du patient ne permet pas d'afficher ses informations.",
        "withheld_unknown": "Aucune information sur ce patient n'a encore été reçue.",
        "withheld_unavailable": "Informations du patient momentanément indisponibles ; rechargez.",
    },
    "en": {
        "intl_locale": "en-GB",
        "language_name": "English",
        "switch_label": "Language",
        "product": "caremesh",
        "subtitle": "care coordination inbox",
        "login_title": "Sign in · caremesh inbox",
        "inbox_title": "Alerts · caremesh inbox",
        "username": "Username",
        "password": "Password",
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "error_too_large": "The form was too large.",
        "error_expired": "The sign-in form expired; please sign in again.",
        "error_refused": "Unknown username or wrong password.",
        "filters": "Filter alerts",
        "status": "Status",
        "status_open": "Open",
        "status_closed": "Closed",
        "all": "All",
        "pathway": "Pathway",
        "all_pathways": "All pathways",
        "severity": "Severity",
        "all_severities": "All severities",
        "severity_critical": "Critical",
        "severity_high": "High",
        "severity_medium": "Medium",
        "severity_low": "Low",
        "connecting": "connecting…",
        "live": "live",
        "reconnecting": "reconnecting…",
        "unavailable": "unavailable",
        "alerts": "Alerts",
        "empty": "No alerts match these filters.",
        "rule": "Rule",
        "raised": "Raised",
        "patient": "Patient",
        "note_optional": "Note (optional)",
        "acknowledge": "Acknowledge",
        "dismiss": "Dismiss",
        "closed_ack": "Acknowledged by {by} on {at}",
        "closed_dismiss": "Dismissed by {by} on {at}",
        "announce_new": "New {severity} alert: {title}",
        "announce_ack": "Acknowledged: {title}",
        "announce_dismiss": "Dismissed: {title}",
        "error_already_closed": "Already closed.",
        "error_not_saved": "Not saved, please try again.",
        "error_unreachable": "Not saved: the inbox is unreachable.",
        "context_label": "About the patient",
        "name": "Name",
        "sex": "Sex",
        "sex_male": "Male",
        "sex_female": "Female",
        "sex_other": "Other",
        "sex_unknown": "Unknown",
        "age": "Age",
        "age_years": "{age} years",
        "phone": "Phone",
        "care_team": "Care team",
        "withheld_consent": "Consent does not permit showing this patient's details.",
        "withheld_unknown": "No details of this patient have been received yet.",
        "withheld_unavailable": "The patient's details are unavailable for now; reload the page.",
    },
}
"""Every people-facing text of the inbox, per language."""


def as_lang(value: str | None) -> Lang | None:
    """`value` when it names a catalogue language (case-insensitive), else None."""
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered == "fr":
        return "fr"
    if lowered == "en":
        return "en"
    return None


def from_accept_language(header: str | None) -> Lang | None:
    """The catalogue language the browser prefers most (`fr-FR;q=0.8, en` style), or None."""
    if not header:
        return None
    ranked: list[tuple[float, int, Lang]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(number)
                except ValueError:
                    weight = 0.0
        lang = as_lang(tag.split("-", 1)[0])
        if lang is not None and weight > 0:
            ranked.append((-weight, position, lang))
    return min(ranked)[2] if ranked else None


def choose_lang(query: str | None, cookie: str | None, accept_language: str | None) -> Lang:
    """The request's language: query parameter, then cookie, then Accept-Language, then French."""
    return (
        as_lang(query) or as_lang(cookie) or from_accept_language(accept_language) or DEFAULT_LANG
    )


def message(lang: Lang, key: str) -> str:
    """The text of `key` in `lang` (KeyError for a key the catalogue lacks)."""
    return MESSAGES[lang][key]
