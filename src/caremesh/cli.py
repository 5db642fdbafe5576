"""The `caremesh` command: one entry point for operators, integrators and researchers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from caremesh import __version__
from caremesh.errors import CaremeshError
from caremesh.logs import configure_logging
from caremesh.settings import Settings

log = logging.getLogger("caremesh.cli")

Handler = Callable[[argparse.Namespace, Settings], int]


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.localkafka import LocalKafka  # noqa: PLC0415

    broker = LocalKafka(settings.kafka)
    if args.action == "up":
        status = broker.up(wait=args.wait)
        print(f"Kafka is up on {status.bootstrap} (pid {status.pid})")
    elif args.action == "down":
        print("Kafka stopped" if broker.down() else "Kafka was not running")
    elif args.action == "reset":
        broker.reset()
        print("Kafka stopped and its data deleted")
    elif args.action == "fetch":
        broker.fetch_jars()
        print(f"Kafka jars in {broker.libs}")
    else:
        status = broker.status()
        state = "running" if status.running else "stopped"
        answer = ", answering" if status.answering else ""
        print(f"Kafka {state}{answer} on {status.bootstrap} (pid {status.pid})")
        return 0 if status.answering else 3
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.topics import catalogue, ensure_topics  # noqa: PLC0415

    specs = catalogue(
        [o.id for o in settings.organisations],
        [(s.id, s.retention_days) for s in settings.studies],
    )
    if args.action == "list":
        for spec in specs:
            retention = (
                "forever" if spec.retention_ms < 0 else f"{spec.retention_ms // 86_400_000}d"
            )
            policy = "compact" if spec.compacted else retention
            print(f"{settings.kafka.topic_prefix}{spec.name:32} key={spec.key.value:28} {policy}")
        return 0
    outcomes = ensure_topics(
        settings.kafka.bootstrap_servers,
        specs,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        prefix=settings.kafka.topic_prefix,
    )
    for outcome in outcomes:
        print(f"{outcome.action:9} {outcome.name}")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.streams.worker import run_worker  # noqa: PLC0415

    return run_worker(settings, stages=args.stage)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.demo.run import run_demo  # noqa: PLC0415

    return run_demo(settings, args.duration)


COMMANDS: dict[str, Handler] = {
    "kafka": _kafka,
    "topics": _topics,
    "worker": _worker,
    "demo": _demo,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `caremesh` (also used to render the CLI reference)."""
    parser = argparse.ArgumentParser(
        prog="caremesh",
        description="Health data integration over Kafka: FHIR in, consent-checked sharing, "
        "pathway alerts and pseudonymised research streams out. Configuration comes from "
        "CAREMESH_* environment variables (see docs/).",
    )
    parser.add_argument("--version", action="version", version=f"caremesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser(
        "kafka",
        help="run the local single-node Kafka broker",
        description="Fetch Apache Kafka's jars from Maven Central once, then "
        "run a single-node KRaft broker on 127.0.0.1.",
    )
    kafka.add_argument(
        "action",
        choices=["up", "down", "status", "reset", "fetch"],
        help="up: start (or reuse) the broker and wait until it answers; down: "
        "stop it; status: exit 0 if it answers; reset: stop and delete its data; "
        "fetch: only download the jars",
    )
    kafka.add_argument(
        "--wait",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="how long `up` waits for the broker to answer (default 90)",
    )

    topics = sub.add_parser(
        "topics",
        help="create or list the catalogue topics",
        description="Create every catalogue topic that is missing and verify "
        "the others (idempotent).",
    )
    topics.add_argument("action", choices=["create", "list"])

    worker = sub.add_parser(
        "worker",
        help="run a stream worker (Faust)",
        description="Run a Faust worker with the stream stages; scale out by "
        "starting more workers (partitions are the unit of parallelism).",
    )
    worker.add_argument(
        "--stage",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this stage (repeatable); default: all stages",
    )
    demo = sub.add_parser(
        "demo",
        help="run the whole platform on a synthetic territory",
        description="Start the local broker, every service and a synthetic "
        "territory feeding them; show a live summary. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="run unattended for this long, print the summary and exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `caremesh` console script."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"caremesh: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return COMMANDS[args.command](args, settings)
    except CaremeshError as exc:
        print(f"caremesh {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
