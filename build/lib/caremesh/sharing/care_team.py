"""Care-team sharing, the pure part: who is on a patient's care team, and who gets a resource.

A patient's care team is folded from the CareTeam and EpisodeOfCare resources seen on
clinical.fhir.v1 (FHIR R4/R5 shapes): the organisations referenced by `CareTeam.participant.member`,
`CareTeam.participant.onBehalfOf`, `CareTeam.managingOrganization` and
`EpisodeOfCare.managingOrganization`. A newer version of the same CareTeam or EpisodeOfCare
replaces the older one; an inactive, entered-in-error, finished or cancelled one removes its
organisations. An `Organization/<id>` reference names organisation `<id>` whether or not it is a
member yet (so a member admitted later receives for the care teams that already named it); an
identifier value names an organisation only when it is a known organisation id. Who actually
receives is decided when a resource is shared, against the organisations of that moment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

_ORG_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""An organisation id as the configuration allows it (ASCII here: it names a topic)."""
CARE_TEAM_TYPES = frozenset({"CareTeam", "EpisodeOfCare"})
ENDED_STATUSES = frozenset({"inactive", "entered-in-error", "finished", "cancelled", "suspended"})

CareTeamState = dict[str, list[str]]
"""`<type>/<id>` of a CareTeam or EpisodeOfCare → the organisation ids it names (JSON-able)."""


def _org_of(ref: object, known: frozenset[str]) -> str | None:
    if not isinstance(ref, Mapping):
        return None
    reference = ref.get("reference")
    if isinstance(reference, str):
        rtype, _, rid = reference.rpartition("/")
        if rtype.endswith("Organization") and _ORG_ID.fullmatch(rid):
            return rid
    identifier = ref.get("identifier")
    if isinstance(identifier, Mapping):
        value = identifier.get("value")
        if isinstance(value, str) and value in known:
            return value
    return None


def _refs(resource: Mapping[str, Any]) -> Iterable[object]:
    if resource.get("resourceType") == "CareTeam":
        for participant in resource.get("participant") or ():
            if isinstance(participant, Mapping):
                yield participant.get("member")
                yield participant.get("onBehalfOf")
        yield from resource.get("managingOrganization") or ()
    else:
        yield resource.get("managingOrganization")


def fold_care_team(
    state: Mapping[str, list[str]], resource: Mapping[str, Any], known_orgs: frozenset[str]
) -> CareTeamState | None:
    """The new care-team state after `resource`, or None when it does not change the team."""
    rtype = resource.get("resourceType")
    rid = resource.get("id")
    if rtype not in CARE_TEAM_TYPES or not isinstance(rid, str):
        return None
    entry = f"{rtype}/{rid}"
    if resource.get("status") in ENDED_STATUSES:
        orgs: list[str] = []
    else:
        orgs = sorted({o for ref in _refs(resource) if (o := _org_of(ref, known_orgs)) is not None})
    new = dict(state)
    if orgs:
        new[entry] = orgs
    else:
        new.pop(entry, None)
    return new if new != dict(state) else None


def care_team(state: Mapping[str, list[str]]) -> frozenset[str]:
    """Every organisation currently on the patient's care team."""
    return frozenset(org for orgs in state.values() for org in orgs)


def recipients(
    state: Mapping[str, list[str]], resource_type: str, subscriptions: Mapping[str, frozenset[str]]
) -> list[str]:
    """Care-team organisations subscribed to this resource type, in a stable order."""
    return sorted(o for o in care_team(state) if resource_type in subscriptions.get(o, frozenset()))


def security_labels(resource: Mapping[str, Any]) -> frozenset[str]:
    """The codes of `meta.security` (confidentiality and sensitivity labels)."""
    meta = resource.get("meta")
    if not isinstance(meta, Mapping):
        return frozenset()
    return frozenset(
        code
        for label in meta.get("security") or ()
        if isinstance(label, Mapping)
        if isinstance(code := label.get("code"), str)
    )
