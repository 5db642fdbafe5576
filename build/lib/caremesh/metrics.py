"""Every Prometheus metric of caremesh, once, in one registry per process.

Names end in `_total` for counters and `_seconds` for durations. Labels take bounded values only
(stage, connector, error code, organisation or study from configuration); never a patient,
resource id or message id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """The metrics of one process; components receive this object rather than globals."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages_in = Counter(
            "caremesh_messages_in_total",
            "Messages taken in by a stage or connector",
            ["component"],
            registry=r,
        )
        self.messages_out = Counter(
            "caremesh_messages_out_total",
            "Records written by a stage or connector",
            ["component"],
            registry=r,
        )
        self.rejected = Counter(
            "caremesh_messages_rejected_total",
            "Messages rejected (dead-lettered or refused)",
            ["component", "code"],
            registry=r,
        )
        self.duplicates = Counter(
            "caremesh_duplicates_dropped_total",
            "Messages dropped because their id was already processed",
            ["component"],
            registry=r,
        )
        self.retries = Counter(
            "caremesh_retries_total",
            "Transient failures retried",
            ["component"],
            registry=r,
        )
        self.stage_cpu = Counter(
            "caremesh_stage_cpu_seconds_total",
            "CPU time of a stage's thread (its batches: handling, producing, committing)",
            ["component"],
            registry=r,
        )
        self.stage_duration = Histogram(
            "caremesh_stage_duration_seconds",
            "Time to process one message in a stage",
            ["component"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.consent_decisions = Counter(
            "caremesh_consent_decisions_total",
            "Consent decisions by purpose and outcome",
            ["component", "purpose", "outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            "caremesh_deliveries_total",
            "Deliveries to an organisation's endpoint by outcome",
            ["organisation", "outcome"],
            registry=r,
        )
        self.alerts = Counter(
            "caremesh_alerts_total",
            "Pathway alerts raised",
            ["pathway", "severity"],
            registry=r,
        )
        self.research_records = Counter(
            "caremesh_research_records_total",
            "Records written to a study stream",
            ["study", "kind"],
            registry=r,
        )
        self.consent_ready = Gauge(
            "caremesh_consent_state_ready",
            "1 when consent state has caught up with the ledger",
            ["component"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
