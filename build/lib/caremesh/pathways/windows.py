"""Rule windows: which kept resources a rule stores, and which combinations of them fire it.

A combination fires only if it contains the incoming resource and at least one resource not
yet part of an alert, so a re-delivered resource raises nothing and, after a coordinator closed
an alert, only new evidence raises a new one. Times are clinical times in epoch seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from caremesh.pathways.definition import (
    AnyRule,
    ChangeOverWindowRule,
    Comparator,
    CountInWindowRule,
    MissingExpectedRule,
    OccurrenceRule,
    Quantity,
    ReadmissionRule,
    RepeatedThresholdRule,
    ThresholdRule,
)
from caremesh.pathways.resource import (
    clinical_time,
    encounter_classes,
    encounter_period,
    matches,
    quantity,
)
from caremesh.pathways.state import Record
from caremesh.pathways.units import convert

Resource = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Combination:
    """Kept resources that together meet a rule; the last one (by time) is the trigger."""

    members: tuple[Record, ...]
    occurred_at: int

    @property
    def trigger(self) -> Record:
        """The latest member, whose reference is the `trigger` episode."""
        return max(self.members, key=lambda item: (item.t, item.ref))


def compare(value: float, comparator: Comparator, limit: float) -> bool:
    """`value <comparator> limit`, after rounding away float noise (82.1 - 80 > 2)."""
    value, limit = round(value, 9), round(limit, 9)
    if comparator == ">":
        return value > limit
    if comparator == ">=":
        return value >= limit
    if comparator == "<":
        return value < limit
    return value <= limit


def meets_threshold(
    resource: Resource, comparator: Comparator, limits: tuple[Quantity, ...]
) -> bool:
    """Whether the valueQuantity meets the threshold of its unit family (False if none fits)."""
    found = quantity(resource)
    if found is None:
        return False
    for limit in limits:
        converted = convert(found[0], found[1], limit.unit)
        if converted is not None:
            return compare(converted, comparator, limit.value)
    return False


def records_for(rule: AnyRule, resource: Resource, ref: str) -> list[Record] | None:
    """The records this resource contributes to the rule's store.

    None: the rule does not look at this resource at all (keep what is stored). An empty list:
    the rule looks at it but it does not qualify (anymore), so older versions are dropped.
    """
    if isinstance(rule, MissingExpectedRule):
        found: list[Record] = []
        looked = False
        for role, match in (("trigger", rule.trigger), ("expected", rule.expected)):
            if matches(match, resource):
                looked = True
                when = clinical_time(resource, match.at)
                if when is not None:
                    found.append(Record(ref=ref, t=when, role=role))
        return found if looked else None
    if isinstance(rule, ReadmissionRule):
        if resource.get("resourceType") != "Encounter":
            return None
        if not encounter_classes(resource) & set(rule.encounter_classes):
            return None
        start, end = encounter_period(resource)
        return [Record(ref=ref, t=start, end=end)] if start is not None else []
    if not matches(rule.match, resource):
        return None
    when = clinical_time(resource, rule.match.at)
    if when is None:
        return []
    if isinstance(rule, ThresholdRule | RepeatedThresholdRule):
        qualifies = meets_threshold(resource, rule.comparator, rule.thresholds)
        return [Record(ref=ref, t=when)] if qualifies else []
    if isinstance(rule, ChangeOverWindowRule):
        found_value = quantity(resource)
        value = convert(*found_value, rule.amount.unit) if found_value else None
        return [Record(ref=ref, t=when, v=value)] if value is not None else []
    return [Record(ref=ref, t=when)]


def combinations(rule: AnyRule, records: list[Record], incoming: str) -> list[Combination]:
    """Combinations of kept records that meet the rule and include the `incoming` reference.

    `missing_expected` never fires on arrival; see `missed_deadlines`.
    """
    if isinstance(rule, ThresholdRule | OccurrenceRule) or (
        isinstance(rule, CountInWindowRule) and rule.count == 1
    ):
        return [Combination((item,), item.t) for item in records if item.ref == incoming]
    if isinstance(rule, RepeatedThresholdRule | CountInWindowRule):
        return _blocks(records, incoming, rule.count, int(rule.window.total_seconds()))
    if isinstance(rule, ChangeOverWindowRule):
        return _changes(rule, records, incoming)
    if isinstance(rule, ReadmissionRule):
        return _readmissions(records, incoming, int(rule.window.total_seconds()))
    return []


def _blocks(records: list[Record], incoming: str, count: int, window: int) -> list[Combination]:
    """Runs of `count` consecutive records (by time) spanning at most `window`, with incoming.

    If any `count` records including the incoming one fit in the window, such a run exists.
    """
    ordered = sorted(records, key=lambda item: (item.t, item.ref))
    found = []
    for index, item in enumerate(ordered):
        if item.ref != incoming:
            continue
        for first in range(max(0, index - count + 1), index + 1):
            last = first + count - 1
            if last < len(ordered) and ordered[last].t - ordered[first].t <= window:
                block = tuple(ordered[first : last + 1])
                found.append(Combination(block, ordered[last].t))
    return found


def _changes(rule: ChangeOverWindowRule, records: list[Record], incoming: str) -> list[Combination]:
    """Pairs (earlier, later) with the incoming reading on either side."""
    window = int(rule.window.total_seconds())
    found = []
    for new in (item for item in records if item.ref == incoming):
        for other in records:
            before, after = (other, new) if other.t < new.t else (new, other)
            if other.ref == incoming or before.v is None or after.v is None:
                continue
            if not 0 < after.t - before.t <= window:
                continue
            delta = after.v - before.v if rule.direction == "increase" else before.v - after.v
            if compare(delta, rule.comparator, rule.amount.value):
                found.append(Combination((before, after), after.t))
    return found


def _readmissions(records: list[Record], incoming: str, window: int) -> list[Combination]:
    """Pairs (discharged, readmitted) with the incoming Encounter on either side."""
    found = []
    for new in (item for item in records if item.ref == incoming):
        for other in records:
            if other.ref == incoming:
                continue
            for first, second in ((other, new), (new, other)):
                if first.end is not None and 0 < second.t - first.end <= window:
                    found.append(Combination((first, second), second.t))
    return found


def missed_deadlines(
    rule: MissingExpectedRule, records: list[Record], now: int, grace: int
) -> list[Combination]:
    """Unfired triggers whose deadline (plus grace) passed with no expected resource in time."""
    deadline = int(rule.deadline.total_seconds())
    found = []
    for trigger in records:
        if trigger.role != "trigger" or trigger.used or now < trigger.t + deadline + grace:
            continue
        met = any(
            item.role == "expected"
            and item.ref != trigger.ref
            and trigger.t <= item.t <= trigger.t + deadline
            for item in records
        )
        if not met:
            found.append(Combination((trigger,), trigger.t + deadline))
    return found
