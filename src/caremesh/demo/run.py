"""`caremesh demo`: the local broker, every service and a synthetic territory feeding them.

It starts the broker (unless one answers), creates the catalogue topics for the territory's
organisations and studies, runs the services as child processes (a worker with every stage,
the FHIR ingest API, the MLLP listener, the consent API, FHIR delivery, the coordinators' inbox
and stand-in FHIR endpoints for the providers), starts a real HAPI FHIR R4 server (local/hapi,
built once by Maven into its cache) as one organisation's FHIR endpoint (`HAPI_ORGANISATION`),
feeds the territory's events over HTTP and MLLP
on a faster-than-real-time clock, and shows a live summary. Secrets (source tokens, the consent
administrator token, the pseudonymisation master key, the inbox session key and the demo
coordinator's password) are made for each run and passed to the children in their environment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from caremesh.connectors.inbox.auth import hash_password
from caremesh.demo.feed import Feeder, FeedOptions, FeedTargets
from caremesh.demo.scenario import demo_clock, territory_events
from caremesh.demo.supervisor import Supervisor
from caremesh.demo.territory import Territory
from caremesh.errors import LocalHapiError
from caremesh.kafka.admin import ensure_topics
from caremesh.kafka.config import KafkaTarget, confluent_config, confluent_security
from caremesh.kafka.local import LocalKafka
from caremesh.local.hapi import HapiProcess, LocalHapi
from caremesh.local.hapi import down as hapi_down
from caremesh.settings import KafkaSettings, Settings
from caremesh.topics import catalogue

log = logging.getLogger(__name__)

COORDINATOR = "care-coordination"
STAGES = ("hl7v2", "validate", "share", "pathways", "research")
HAPI_ORGANISATION = "gp-01"
"""The organisation whose FHIR endpoint is the demo's HAPI FHIR server (the others: stand-ins)."""
HAPI_COUNTED = ("Patient", "Encounter", "Observation", "Condition", "CareTeam")
"""The resource types the summary counts at the HAPI server."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class DemoOptions:
    """What the demo runs."""

    duration: float | None = None
    patients: int = 2000
    rate: float = 150.0
    seed: int | None = None
    simulated_days: float = 1.5


@dataclass
class Ports:
    """Free local ports for every service of one run."""

    ingest: int
    mllp: int
    consent: int
    delivery: int
    inbox: int
    worker: int
    endpoints: int
    hapi: int

    @classmethod
    def pick(cls) -> Ports:
        """Ask the OS for free ports."""
        found = []
        socks = []
        for _ in range(8):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            found.append(int(s.getsockname()[1]))
        for s in socks:
            s.close()
        return cls(*found)


@dataclass
class Summary:
    """Counts gathered from the services' /metrics pages."""

    stage_out: dict[str, float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)
    denials: float = 0.0
    alerts: float = 0.0
    research: dict[str, float] = field(default_factory=dict)
    deliveries: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    hapi_held: dict[str, int] | None = None
    """Resources the HAPI FHIR server holds, by type (None: no HAPI server in this run)."""


def scrape(url: str) -> Samples:
    """Counter samples of one /metrics page, keyed by (sample name, sorted labels)."""
    out: Samples = {}
    try:
        text = httpx.get(url, timeout=2.0).text
    except httpx.HTTPError:
        return out
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def hapi_counts(base_url: str) -> dict[str, int]:
    """How many resources of each counted type the HAPI FHIR server holds (`_summary=count`)."""
    out: dict[str, int] = {}
    for rtype in HAPI_COUNTED:
        try:
            response = httpx.get(f"{base_url}/{rtype}", params={"_summary": "count"}, timeout=5.0)
            out[rtype] = int(response.json().get("total", 0)) if response.is_success else 0
        except (httpx.HTTPError, ValueError):
            out[rtype] = 0
    return out


def gather(ports: Ports, hapi: str | None = None) -> Summary:
    """Scrape the worker, delivery and endpoint metrics (and count HAPI's resources)."""
    s = Summary()
    if hapi is not None:
        s.hapi_held = hapi_counts(hapi)
    for (name, labels), value in scrape(f"http://127.0.0.1:{ports.worker}/metrics").items():
        lab = dict(labels)
        if name == "caremesh_messages_out_total":
            s.stage_out[lab["component"]] = s.stage_out.get(lab["component"], 0) + value
        elif name == "caremesh_messages_rejected_total":
            s.dead_letters[lab["component"]] = s.dead_letters.get(lab["component"], 0) + value
        elif name == "caremesh_consent_decisions_total" and lab.get("outcome") == "deny":
            s.denials += value
        elif name == "caremesh_alerts_total":
            s.alerts += value
        elif name == "caremesh_research_records_total":
            s.research[lab["study"]] = s.research.get(lab["study"], 0) + value
    for (name, labels), value in scrape(f"http://127.0.0.1:{ports.delivery}/metrics").items():
        lab = dict(labels)
        if name == "caremesh_deliveries_total" and lab.get("outcome") == "delivered":
            s.deliveries[lab["organisation"]] = s.deliveries.get(lab["organisation"], 0) + value
    for (name, labels), value in scrape(f"http://127.0.0.1:{ports.endpoints}/metrics").items():
        if name == "caremesh_demo_endpoint_received_total":
            org = dict(labels)["organisation"]
            s.received[org] = s.received.get(org, 0) + value
    return s


def render(
    summary: Summary, feeder: Feeder, elapsed: float, previous: Summary | None, interval: float
) -> Group:
    """The live summary: feed, stages, consent, alerts, research, deliveries."""
    feed = Table(title=f"Feed ({elapsed:,.0f}s)", title_justify="left")
    for col in ("channel", "sent", "accepted", "rejected", "retried"):
        feed.add_column(col, justify="left" if col == "channel" else "right")
    for channel, c in sorted(feeder.counters.snapshot().items()):
        feed.add_row(channel, f"{c.sent:,}", f"{c.accepted:,}", f"{c.rejected:,}", f"{c.retried:,}")
    stages = Table(title="Stages", title_justify="left")
    for col in ("stage", "records out", "per second", "dead letters"):
        stages.add_column(col, justify="left" if col == "stage" else "right")
    for stage in STAGES:
        out = summary.stage_out.get(stage, 0.0)
        before = previous.stage_out.get(stage, 0.0) if previous else 0.0
        if previous is not None and interval > 0:
            rate = (out - before) / interval
        else:
            rate = out / elapsed if elapsed > 0 else 0.0
        stages.add_row(
            stage, f"{out:,.0f}", f"{rate:,.1f}", f"{summary.dead_letters.get(stage, 0):,.0f}"
        )
    other = Table(title="Outcomes", title_justify="left")
    other.add_column("what")
    other.add_column("count", justify="right")
    other.add_row("pathway alerts raised", f"{summary.alerts:,.0f}")
    other.add_row("consent denials", f"{summary.denials:,.0f}")
    for study, n in sorted(summary.research.items()):
        other.add_row(f"research records: {study}", f"{n:,.0f}")
    for org, n in sorted(summary.deliveries.items()):
        other.add_row(f"delivered to {org}", f"{n:,.0f}")
    if summary.hapi_held is not None:
        held = ", ".join(f"{t} {n:,}" for t, n in summary.hapi_held.items())
        other.add_row(
            f"held by HAPI FHIR ({HAPI_ORGANISATION})",
            f"{sum(summary.hapi_held.values()):,}",
        )
        other.add_row("  by type", held)
    return Group(feed, stages, other)


def zero_stages(summary: Summary) -> list[str]:
    """What stayed at zero: every stage, alerts, research and delivery must have moved."""
    missing = [s for s in STAGES if summary.stage_out.get(s, 0) <= 0 and s != "pathways"]
    if summary.alerts <= 0:
        missing.append("pathways (alerts)")
    if sum(summary.research.values()) <= 0:
        missing.append("research")
    if sum(summary.deliveries.values()) <= 0:
        missing.append("delivery")
    return missing


def _environment(
    kafka: KafkaSettings,
    territory: Territory,
    ports: Ports,
    secrets_: dict[str, str],
    prefix: str,
    *,
    hapi: str | None = None,
) -> dict[str, str]:
    orgs = []
    for org in territory.organisation_settings():
        data = org.model_dump(mode="json")
        data["fhir_endpoint"] = f"http://127.0.0.1:{ports.endpoints}/{org.id}/fhir"
        if hapi is not None and org.id == HAPI_ORGANISATION:
            data["fhir_endpoint"] = hapi
        data["token"] = secrets_["endpoint"]
        orgs.append(data)
    sources = [
        {**s.model_dump(mode="json"), "token": s.token.get_secret_value() if s.token else None}
        for s in territory.source_settings()
    ]
    coordinators = dict.fromkeys(
        ("heart-failure", "type2-diabetes", "copd", "elderly-frailty"),
        f"Organization/{COORDINATOR}",
    )
    return {
        "CAREMESH_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CAREMESH_KAFKA__PARTITIONS": str(kafka.partitions),
        "CAREMESH_ORGANISATIONS": json.dumps(orgs),
        "CAREMESH_SOURCES": json.dumps(sources),
        "CAREMESH_STUDIES": json.dumps(
            [s.model_dump(mode="json") for s in territory.study_settings()]
        ),
        "CAREMESH_CONSENT_API__ADMINS": json.dumps(
            {k: v.get_secret_value() for k, v in territory.consent_admins().items()}
        ),
        "CAREMESH_PSEUDONYM__MASTER_KEY": secrets_["master"],
        "CAREMESH_PATHWAYS__COORDINATORS": json.dumps(coordinators),
        "CAREMESH_PATHWAYS__TICK_INTERVAL_SECONDS": "10",
        "CAREMESH_INBOX__SESSION_SECRET": secrets_["session"],
        "CAREMESH_INBOX__COORDINATORS": json.dumps(
            [
                {
                    "username": "coordinator",
                    "password_hash": hash_password(secrets_["password"]),
                    "organisation": COORDINATOR,
                    "display_name": "Demo coordinator",
                }
            ]
        ),
        "CAREMESH_HTTP_INGEST__PORT": str(ports.ingest),
        "CAREMESH_MLLP__PORT": str(ports.mllp),
        "CAREMESH_CONSENT_API__PORT": str(ports.consent),
        "CAREMESH_DELIVERY__PORT": str(ports.delivery),
        "CAREMESH_INBOX__PORT": str(ports.inbox),
        "CAREMESH_WORKER__WEB_PORT": str(ports.worker),
        "CAREMESH_KAFKA__TOPIC_PREFIX": prefix,
        "CAREMESH_WORKER__APP_ID": f"{prefix}caremesh-demo",
    }


def delete_topics(bootstrap: KafkaTarget, prefix: str) -> None:
    """Delete every topic of one demo run (its catalogue topics and the stages' state topics)."""
    from caremesh.kafka.client import (  # noqa: PLC0415
        AdminClient,
        KafkaException,
    )

    admin = AdminClient(confluent_config(bootstrap))
    try:
        names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(timeout=30)
    except KafkaException:
        log.warning("could not delete the demo topics with prefix %s", prefix)


def _wait_http(url: str, supervisor: Supervisor, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor.failed():
            return
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Run the platform on a synthetic territory; 0 when every stage moved data."""
    console = Console()
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    territory = Territory.generate(seed, patients=options.patients)
    ports = Ports.pick()
    secrets_ = {
        "master": secrets.token_hex(32),
        "session": secrets.token_urlsafe(48),
        "password": secrets.token_urlsafe(9),
        "endpoint": secrets.token_urlsafe(24),
    }
    # Each run has its own topics (deleted at the end), so a run never replays an earlier one.
    prefix = f"{settings.kafka.topic_prefix}demo-{seed}."
    log_dir = settings.state_dir / "demo-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # the HAPI server's JVM starts while the broker does
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    hapi_start = pool.submit(LocalHapi().up, ports.hapi, "R4", log_dir / "hapi.log")
    pool.shutdown(wait=False)

    broker = LocalKafka(settings.kafka)
    started_broker = not broker.answering()
    console.print("Starting the local Kafka broker…" if started_broker else "Kafka broker is up.")
    console.print(f"Starting a HAPI FHIR R4 server as {HAPI_ORGANISATION}'s FHIR endpoint…")
    try:
        broker.up()
    except BaseException:
        _stop_hapi(_started_hapi(console, hapi_start))
        raise
    hapi = _started_hapi(console, hapi_start)
    env = _environment(
        settings.kafka, territory, ports, secrets_, prefix, hapi=hapi.base_url if hapi else None
    )
    ensure_topics(
        settings.kafka.bootstrap_servers,
        catalogue(
            [o.id for o in territory.organisation_settings()],
            [(s.id, s.retention_days) for s in territory.study_settings()],
        ),
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        prefix=prefix,
        client_config=confluent_security(settings.kafka),
    )
    supervisor = Supervisor(log_dir)
    stop = asyncio.Event()
    result = 1
    try:
        supervisor.start("endpoints", ["demo-endpoints", "--port", str(ports.endpoints)], env)
        supervisor.start("worker", ["worker"], env)
        supervisor.start("ingest-api", ["ingest-api"], env)
        supervisor.start("mllp", ["mllp"], env)
        supervisor.start("consent-api", ["consent-api"], env)
        supervisor.start("delivery", ["deliver"], env)
        supervisor.start("inbox", ["inbox"], env)
        console.print("Waiting for the services…")
        for url in (
            f"http://127.0.0.1:{ports.ingest}/health",
            f"http://127.0.0.1:{ports.consent}/health",
            f"http://127.0.0.1:{ports.inbox}/health",
            f"http://127.0.0.1:{ports.worker}/health",
            f"http://127.0.0.1:{ports.endpoints}/health",
        ):
            _wait_http(url, supervisor)
        if supervisor.failed():
            raise RuntimeError("a service stopped during start-up")
        if hapi is not None:
            console.print(f"[bold]HAPI FHIR ({HAPI_ORGANISATION}):[/bold] {hapi.base_url}")
        console.print(
            f"[bold]Inbox:[/bold] http://127.0.0.1:{ports.inbox}/  "
            f"(user [bold]coordinator[/bold], password [bold]{secrets_['password']}[/bold])"
        )
        for name, port in (
            ("worker", ports.worker),
            ("ingest API", ports.ingest),
            ("consent API", ports.consent),
            ("delivery", ports.delivery),
        ):
            console.print(f"Metrics ({name}): http://127.0.0.1:{port}/metrics")
        console.print(
            f"Territory: {options.patients:,} patients, seed {seed}; logs in "
            f"{supervisor.log_dir}. "
            + (
                "Ctrl-C stops everything."
                if options.duration is None
                else f"Running for {options.duration:.0f}s."
            )
        )
        result = asyncio.run(
            _feed_and_watch(
                console,
                territory=territory,
                ports=ports,
                options=options,
                supervisor=supervisor,
                stop=stop,
                hapi=hapi.base_url if hapi else None,
            )
        )
    except KeyboardInterrupt:
        result = 0
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        result = 1
    finally:
        supervisor.stop_all()
        _stop_hapi(hapi)
        delete_topics(settings.kafka, prefix)
        if started_broker:
            broker.down()
    for service in supervisor.services:
        code = service.process.returncode if service.process else None
        if code not in (0, -signal.SIGTERM, None):
            console.print(
                f"[yellow]{service.name} exited with {code}; see {service.log_path}[/yellow]"
            )
            for line in _log_tail(service.log_path):
                console.print(f"  {service.name}| {line}", markup=False, highlight=False)
    return result


def _started_hapi(
    console: Console, start: concurrent.futures.Future[HapiProcess]
) -> HapiProcess | None:
    """The HAPI server once it answers; None (stand-in endpoints for all) when it cannot run."""
    try:
        return start.result()
    except LocalHapiError as exc:
        console.print(
            f"[yellow]no HAPI FHIR server ({exc}); every provider uses a stand-in[/yellow]"
        )
        return None


def _stop_hapi(hapi: HapiProcess | None) -> None:
    if hapi is not None:
        hapi_down(hapi)


def _log_tail(path: Path | None, lines: int = 25) -> list[str]:
    """The last lines of a service's log (logs carry no payloads), to show why it stopped."""
    if path is None or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 16_384))
        text = handle.read().decode("utf-8", "replace")
    return text.splitlines()[-lines:]


async def _feed_and_watch(
    console: Console,
    *,
    territory: Territory,
    ports: Ports,
    options: DemoOptions,
    supervisor: Supervisor,
    stop: asyncio.Event,
    hapi: str | None = None,
) -> int:
    seconds = options.duration or 600.0
    start, speed = demo_clock(datetime.now(UTC), options.simulated_days, seconds)
    feeder = Feeder(
        FeedTargets(
            ingest_url=f"http://127.0.0.1:{ports.ingest}",
            consent_url=f"http://127.0.0.1:{ports.consent}",
            mllp_host="127.0.0.1",
            mllp_port=ports.mllp,
            tokens=territory.source_tokens(),
            admin_token=territory.admin_token,
        ),
        FeedOptions(rate=options.rate, concurrency=8),
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    feed = asyncio.create_task(
        feeder.run(territory_events(territory, start, speed, days=options.simulated_days))
    )
    began = time.monotonic()
    previous: Summary | None = None
    summary = Summary()
    failed: list[str] = []
    interval = 2.0
    try:
        with Live(console=console, refresh_per_second=2, transient=True) as live:
            while not stop.is_set():
                elapsed = time.monotonic() - began
                summary = await asyncio.to_thread(gather, ports, hapi)
                live.update(render(summary, feeder, elapsed, previous, interval))
                previous = summary
                failed = [s.name for s in supervisor.failed()]
                if failed or (options.duration is not None and elapsed >= options.duration):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
    except asyncio.CancelledError:  # Ctrl-C: show where things stood, then stop everything
        summary = await asyncio.to_thread(gather, ports, hapi)
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
    console.print(render(summary, feeder, time.monotonic() - began, None, interval))
    if failed:
        console.print(f"[red]services that stopped on their own: {', '.join(failed)}[/red]")
        return 1
    if options.duration is not None:
        missing = zero_stages(summary)
        if missing:
            console.print(f"[red]stayed at zero: {', '.join(missing)}[/red]")
            return 1
        console.print("[green]every stage moved data[/green]")
    return 0


def options_from(args: Any) -> DemoOptions:
    """DemoOptions from the CLI arguments."""
    return DemoOptions(
        duration=args.duration, patients=args.patients, rate=args.rate, seed=args.seed
    )
