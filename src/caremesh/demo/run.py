"""`caremesh demo`: broker, topics, every service and the synthetic feed, with a live summary."""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from types import FrameType

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from caremesh.demo.supervisor import Supervisor
from caremesh.localkafka import LocalKafka
from caremesh.settings import Settings
from caremesh.topics import catalogue, ensure_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A service's metrics URL, shown to the user and scraped for the summary."""

    name: str
    url: str


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Counter samples of one /metrics page, keyed by (sample name, sorted labels)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        text = httpx.get(url, timeout=2.0).text
    except httpx.HTTPError:
        return out
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def summary_table(endpoints: list[Endpoint], elapsed: float) -> tuple[Table, dict[str, float]]:
    """A table of messages in/out/rejected per component, and the totals per component."""
    table = Table(title=f"caremesh demo — {elapsed:,.0f}s")
    for col in ("component", "in", "out", "rejected", "out/s"):
        table.add_column(col, justify="right" if col != "component" else "left")
    totals: dict[str, float] = {}
    for ep in endpoints:
        samples = scrape(ep.url)
        rows: dict[str, list[float]] = {}
        for (name, labels), value in samples.items():
            component = dict(labels).get("component")
            if component is None:
                continue
            row = rows.setdefault(component, [0.0, 0.0, 0.0])
            if name == "caremesh_messages_in_total":
                row[0] += value
            elif name == "caremesh_messages_out_total":
                row[1] += value
            elif name == "caremesh_messages_rejected_total":
                row[2] += value
        for component, (n_in, n_out, n_rej) in sorted(rows.items()):
            totals[component] = totals.get(component, 0.0) + n_out
            rate = n_out / elapsed if elapsed > 0 else 0.0
            table.add_row(
                component, f"{n_in:,.0f}", f"{n_out:,.0f}", f"{n_rej:,.0f}", f"{rate:,.1f}"
            )
    return table, totals


def run_demo(settings: Settings, duration: float | None) -> int:
    """Run the whole platform until Ctrl-C or `duration` seconds; 0 when every stage moved data."""
    console = Console()
    broker = LocalKafka(settings.kafka)
    started_broker = not broker.answering()
    broker.up()
    ensure_topics(
        settings.kafka.bootstrap_servers,
        catalogue(
            [o.id for o in settings.organisations],
            [(s.id, s.retention_days) for s in settings.studies],
        ),
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        prefix=settings.kafka.topic_prefix,
    )
    supervisor = Supervisor(settings.state_dir / "demo-logs")
    worker_url = f"http://{settings.worker.web_host}:{settings.worker.web_port}/metrics"
    endpoints = [Endpoint("worker", worker_url)]
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    failed: list[str] = []
    start = time.monotonic()
    try:
        supervisor.start("worker", ["worker"])
        console.print(f"Kafka: {settings.kafka.bootstrap_servers}")
        for ep in endpoints:
            console.print(f"Metrics ({ep.name}): {ep.url}")
        console.print(
            "Press Ctrl-C to stop." if duration is None else f"Running for {duration:.0f}s."
        )
        with Live(console=console, refresh_per_second=1) as live:
            while not stop:
                elapsed = time.monotonic() - start
                table, _ = summary_table(endpoints, elapsed)
                live.update(table)
                failed = [s.name for s in supervisor.failed()]
                if failed or (duration is not None and elapsed >= duration):
                    break
                time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        supervisor.stop_all()
        if started_broker:
            broker.down()
    final, _ = summary_table(endpoints, time.monotonic() - start)
    console.print(final)
    if failed:
        console.print(f"[red]services that stopped on their own: {', '.join(failed)}[/red]")
        return 1
    return 0
