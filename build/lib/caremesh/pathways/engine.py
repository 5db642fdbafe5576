"""Pathway evaluation: enrolment, the per-rule windows, deduplicated alerts and deadlines.

`evaluate` takes one resource of `clinical.fhir.v1` for one patient and returns the new state
and the alerts to raise; `tick` checks `missing_expected` deadlines without a resource;
`close_alert` records a coordinator's acknowledgement or dismissal. All are pure: the state
passed in is never changed.

- Rules use the clinical time of a resource, never its arrival time. A resource is accepted
  for a rule when its clinical time lies within the rule's window plus the pathway's
  out-of-order tolerance before `now` (and no more than the tolerance after it); kept resources
  older than that are pruned. So any arrival order within the tolerance gives the same alerts.
- `now` should be the record's time (its Kafka timestamp), so a replay decides the same.
- Only enrolled patients are evaluated, and only their resources are kept. Enrolment follows
  the first enrolling resource (its reference is the episode); when that resource ends
  (EpisodeOfCare finished, Condition resolved or entered in error...) the patient leaves the
  pathway and the kept resources are dropped.
- One open alert per (patient, rule, episode): while it is open, further evidence is absorbed;
  after `close_alert`, new evidence raises a new alert with the next sequence number. Alert ids
  are uuid5 of patient key, pathway, rule, episode and sequence, so a replay gives the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from caremesh.envelope import PatientKey
from caremesh.pathways.definition import AnyRule, MissingExpectedRule, Pathway, rule_window
from caremesh.pathways.resource import age_years, in_code_sets, is_void, reference, to_epoch
from caremesh.pathways.state import (
    AlertCandidate,
    OpenAlert,
    PatientPathwayState,
    Record,
    alert_id,
    alert_key,
)
from caremesh.pathways.windows import Combination, combinations, missed_deadlines, records_for

Resource = Mapping[str, Any]

MAX_RECORDS_PER_RULE = 200
"""Bound on the resources kept per rule and patient, newest kept (a flood cannot grow state)."""
MAX_PENDING = 20

_ENROLLING = ("Condition", "EpisodeOfCare", "CarePlan")
_ENDED_STATUS = {
    "EpisodeOfCare": frozenset({"finished", "cancelled", "entered-in-error"}),
    "CarePlan": frozenset({"completed", "revoked", "entered-in-error"}),
}
_INACTIVE_CLINICAL = frozenset({"inactive", "resolved", "remission"})


def evaluate(
    pathway: Pathway,
    state: PatientPathwayState,
    resource: Resource,
    *,
    patient_key: PatientKey,
    now: datetime,
) -> tuple[PatientPathwayState, list[AlertCandidate]]:
    """The new state and the alerts to raise after one resource of this patient arrived."""
    at = to_epoch(now)
    work = _start(pathway, state)
    _update_enrolment(pathway, work, resource, at)
    alerts: list[AlertCandidate] = []
    ref = reference(resource)
    if work.enrolled and ref is not None:
        for rule in pathway.rules:
            alerts.extend(
                _ingest(pathway, rule, work, resource, ref=ref, patient_key=patient_key, at=at)
            )
    alerts.extend(_deadlines(pathway, work, patient_key, at))
    _prune(pathway, work, at)
    return work, alerts


def tick(
    pathway: Pathway, state: PatientPathwayState, now: datetime, *, patient_key: PatientKey
) -> tuple[PatientPathwayState, list[AlertCandidate]]:
    """Check deadlines and age-pending enrolment at `now`, and prune; no resource arrived."""
    at = to_epoch(now)
    work = _start(pathway, state)
    _check_pending(work, at)
    alerts = _deadlines(pathway, work, patient_key, at)
    _prune(pathway, work, at)
    return work, alerts


def close_alert(state: PatientPathwayState, alert: str) -> PatientPathwayState:
    """The state with an open alert closed; `alert` is its id or its key. Unknown: unchanged."""
    work = state.copy()
    for key, item in list(work.open_alerts.items()):
        if alert in (key, item.alert_id):
            del work.open_alerts[key]
    return work


def horizon(pathway: Pathway, rule: AnyRule) -> int:
    """Seconds of clinical time a rule keeps and accepts before `now`."""
    tolerance = pathway.out_of_order_tolerance
    if isinstance(rule, MissingExpectedRule):
        return int((rule.deadline + _grace(pathway, rule) + tolerance).total_seconds())
    return int((rule_window(rule) + tolerance).total_seconds())


def _grace(pathway: Pathway, rule: MissingExpectedRule) -> timedelta:
    return rule.grace if rule.grace is not None else pathway.out_of_order_tolerance


def _start(pathway: Pathway, state: PatientPathwayState) -> PatientPathwayState:
    work = state.copy()
    work.pathway_id = pathway.id
    known = {rule.id for rule in pathway.rules}
    work.records = {rule: items for rule, items in work.records.items() if rule in known}
    return work


def _last_time(record: Record) -> int:
    return max(record.t, record.end if record.end is not None else record.t)


def _ended(resource: Resource) -> bool:
    if is_void(resource):
        return True
    kind = str(resource.get("resourceType"))
    if resource.get("status") in _ENDED_STATUS.get(kind, frozenset()):
        return True
    clinical = resource.get("clinicalStatus") if kind == "Condition" else None
    codings = clinical.get("coding") if isinstance(clinical, Mapping) else None
    return isinstance(codings, list) and any(
        isinstance(item, Mapping) and item.get("code") in _INACTIVE_CLINICAL for item in codings
    )


def _update_enrolment(
    pathway: Pathway, work: PatientPathwayState, resource: Resource, at: int
) -> None:
    kind = resource.get("resourceType")
    if kind == "Patient" and pathway.needs_age and isinstance(resource.get("birthDate"), str):
        work.birth_date = resource["birthDate"]
    ref = reference(resource)
    if ref is not None and kind in _ENROLLING:
        criteria = [
            item
            for item in pathway.enrolment
            if item.resource_type == kind and in_code_sets(resource, item.codes)
        ]
        if _ended(resource):
            work.pending = [item for item in work.pending if item[0] != ref]
            if work.episode == ref:
                work.episode = None
                work.enrolled_at = None
                work.records = {}
        elif any(item.min_age_years is None for item in criteria):
            _enrol(work, ref, at)
        elif criteria:
            age = min(item.min_age_years or 0 for item in criteria)
            if (ref, age) not in work.pending and not work.enrolled:
                work.pending = [*work.pending, (ref, age)][-MAX_PENDING:]
    _check_pending(work, at)


def _check_pending(work: PatientPathwayState, at: int) -> None:
    if work.enrolled or not work.pending or work.birth_date is None:
        return
    age = age_years(work.birth_date, at)
    for ref, minimum in work.pending:
        if age is not None and age >= minimum:
            _enrol(work, ref, at)
            return


def _enrol(work: PatientPathwayState, ref: str, at: int) -> None:
    if not work.enrolled:
        work.episode = ref
        work.enrolled_at = at
        work.pending = []


def _ingest(
    pathway: Pathway,
    rule: AnyRule,
    work: PatientPathwayState,
    resource: Resource,
    *,
    ref: str,
    patient_key: PatientKey,
    at: int,
) -> list[AlertCandidate]:
    store = work.records.get(rule.id, [])
    if is_void(resource):
        work.records[rule.id] = [item for item in store if item.ref != ref]
        return []
    new = records_for(rule, resource, ref)
    if new is None:
        return []
    earliest = at - horizon(pathway, rule)
    latest = at + int(pathway.out_of_order_tolerance.total_seconds())
    fresh = [item for item in new if earliest <= _last_time(item) and item.t <= latest]
    if new and not fresh:
        return []  # too late (or too far ahead) to be compared with what was pruned
    previous = {(item.ref, item.role): item for item in store if item.ref == ref}
    kept = [item for item in store if item.ref != ref]
    for item in fresh:
        before = previous.get((item.ref, item.role))
        if before is not None:
            item.used = before.used
            item.end = item.end if item.end is not None else before.end
        kept.append(item)
    kept.sort(key=lambda item: (item.t, item.ref, item.role))
    work.records[rule.id] = kept
    if not fresh:
        return []
    found = [
        combo
        for combo in combinations(rule, kept, ref)
        if any(not member.used for member in combo.members)
    ]
    return _raise(pathway, rule, work, found, patient_key=patient_key, at=at)


def _deadlines(
    pathway: Pathway, work: PatientPathwayState, patient_key: PatientKey, at: int
) -> list[AlertCandidate]:
    alerts: list[AlertCandidate] = []
    if not work.enrolled:
        return alerts
    for rule in pathway.rules:
        if isinstance(rule, MissingExpectedRule):
            grace = int(_grace(pathway, rule).total_seconds())
            missed = missed_deadlines(rule, work.records.get(rule.id, []), at, grace)
            alerts.extend(_raise(pathway, rule, work, missed, patient_key=patient_key, at=at))
    return alerts


def _raise(
    pathway: Pathway,
    rule: AnyRule,
    work: PatientPathwayState,
    found: list[Combination],
    *,
    patient_key: PatientKey,
    at: int,
) -> list[AlertCandidate]:
    alerts: list[AlertCandidate] = []
    for combo in sorted(found, key=lambda item: (item.occurred_at, item.trigger.ref)):
        for member in combo.members:
            member.used = True
        episode = combo.trigger.ref if rule.episode == "trigger" else work.episode
        if episode is None:
            continue
        key = alert_key(rule.id, episode)
        if key in work.open_alerts:
            continue  # deduplicated: one open alert per patient, rule and episode
        sequence = work.sequences.get(key, 0)
        ident = alert_id(patient_key, pathway.id, key, sequence)
        work.open_alerts[key] = OpenAlert(ident, rule.id, episode, at)
        work.sequences[key] = sequence + 1
        members = sorted(combo.members, key=lambda item: (item.t, item.ref))
        alerts.append(
            AlertCandidate(
                alert_id=ident,
                key=key,
                sequence=sequence,
                patient_key=patient_key,
                pathway_id=pathway.id,
                pathway_version=pathway.version,
                coordinator=pathway.coordinator,
                rule_id=rule.id,
                kind=rule.kind,
                severity=rule.severity,
                title=rule.title,
                text=rule.text,
                episode=episode,
                about=tuple(dict.fromkeys(item.ref for item in members)),
                occurred_at=combo.occurred_at,
                raised_at=at,
            )
        )
    return alerts


def _prune(pathway: Pathway, work: PatientPathwayState, at: int) -> None:
    for rule in pathway.rules:
        store = work.records.get(rule.id)
        if store is None:
            continue
        earliest = at - horizon(pathway, rule)
        kept = [item for item in store if _last_time(item) >= earliest][-MAX_RECORDS_PER_RULE:]
        if kept:
            work.records[rule.id] = kept
        else:
            del work.records[rule.id]
