"""Care pathways (DESIGN §7): YAML definitions, per-patient rule evaluation, alerts as FHIR.

A functional core with no Kafka import: the pathways stage keeps one `PatientPathwayState`
per (patient, pathway) in a table, calls `evaluate` for each clinical resource and `tick`
periodically, writes each `AlertCandidate` as `build_communication(...)` to
`pathway.alerts.v1`, and applies coordinator actions read with `parse_action`.
"""

from __future__ import annotations

from caremesh.pathways.alert import (
    CoordinatorAction,
    action_value,
    apply_action,
    build_communication,
    make_action,
    parse_action,
)
from caremesh.pathways.definition import (
    Pathway,
    load_pathway,
    load_pathways,
    load_shipped_pathways,
    parse_pathway,
    shipped_directory,
)
from caremesh.pathways.engine import close_alert, evaluate, tick
from caremesh.pathways.state import AlertCandidate, PatientPathwayState

__all__ = [
    "AlertCandidate",
    "CoordinatorAction",
    "Pathway",
    "PatientPathwayState",
    "action_value",
    "apply_action",
    "build_communication",
    "close_alert",
    "evaluate",
    "load_pathway",
    "load_pathways",
    "load_shipped_pathways",
    "make_action",
    "parse_action",
    "parse_pathway",
    "shipped_directory",
    "tick",
]
