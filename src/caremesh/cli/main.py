"""The `caremesh` command: one entry point for operators, integrators and researchers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from caremesh import __version__
from caremesh.cli.logs import configure_logging
from caremesh.errors import CaremeshError, ConfigurationError, NativeBuildError
from caremesh.security.principals import STAGES
from caremesh.settings import Settings, settings_problems

log = logging.getLogger("caremesh.cli.main")

Handler = Callable[[argparse.Namespace, Settings], int]


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.kafka.local_cluster import LocalCluster  # noqa: PLC0415

    kafka = settings.kafka
    if args.nodes is not None:
        kafka = kafka.model_copy(update={"local_nodes": args.nodes})
    cluster = LocalCluster(kafka)
    if args.action == "up":
        statuses = cluster.up(wait=args.wait)
        pids = ", ".join(str(s.pid) for s in statuses)
        print(f"Kafka is up on {cluster.bootstrap} (pid {pids})")
        if len(statuses) > 1:
            print(f"clients: CAREMESH_KAFKA__BOOTSTRAP_SERVERS={cluster.bootstrap}")
    elif args.action == "down":
        stopped = cluster.down()
        print(f"Kafka stopped ({stopped} node(s))" if stopped else "Kafka was not running")
    elif args.action == "reset":
        cluster.reset()
        print("Kafka stopped and its data deleted")
    elif args.action == "fetch":
        cluster.nodes[0].fetch_jars()
        print(f"Kafka jars in {cluster.nodes[0].libs}")
    else:
        answering = True
        for status in cluster.status():
            state = "running" if status.running else "stopped"
            answer = ", answering" if status.answering else ""
            print(f"Kafka {state}{answer} on {status.bootstrap} (pid {status.pid})")
            answering = answering and status.answering
        return 0 if answering else 3
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.kafka.admin import ensure_topics  # noqa: PLC0415
    from caremesh.kafka.config import confluent_security  # noqa: PLC0415
    from caremesh.topics import catalogue  # noqa: PLC0415

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
        client_config=confluent_security(settings.kafka),
    )
    for outcome in outcomes:
        print(f"{outcome.action:9} {outcome.name}")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.streams.worker import run_worker  # noqa: PLC0415

    return run_worker(settings, stages=args.stage)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.demo.run import options_from, run_demo  # noqa: PLC0415

    return run_demo(settings, options_from(args))


def _demo_endpoints(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.demo.endpoints import run_endpoints  # noqa: PLC0415

    return run_endpoints("127.0.0.1", args.port)


def _inbox(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "hash-password":
        from caremesh.connectors.inbox.auth import hash_password  # noqa: PLC0415

        if sys.stdin.isatty():
            import getpass  # noqa: PLC0415

            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                print("caremesh inbox: the passwords differ", file=sys.stderr)
                return 2
        else:
            password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("caremesh inbox: empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    from caremesh.connectors.inbox.app import run_inbox  # noqa: PLC0415

    return run_inbox(settings)


def _ingest_api(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.connectors.http_ingest import run_http_ingest  # noqa: PLC0415

    return run_http_ingest(settings)


def _mllp(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.connectors.mllp import run_mllp  # noqa: PLC0415

    return run_mllp(settings)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.connectors.bulk_import import import_paths  # noqa: PLC0415

    summary = import_paths(args.paths, settings, args.source, progress=not args.quiet)
    print(f"files: {summary.files}  sent: {summary.sent}  rejected: {summary.rejected}")
    for code, count in sorted(summary.by_code.items()):
        print(f"  rejected {code}: {count}")
    for rejection in summary.rejections[:20]:
        print(f"  {rejection.path}:{rejection.line}: {rejection.code}")
    return 0 if summary.rejected == 0 else 4


def _consent_api(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.connectors.consent_api import run_consent_api  # noqa: PLC0415

    return run_consent_api(settings)


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.connectors.fhir_delivery import run_delivery  # noqa: PLC0415

    return run_delivery(settings)


def _acl(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.security.commands import acl_apply  # noqa: PLC0415

    plan = acl_apply(settings, dry_run=args.dry_run, prune=args.prune)
    verb = "would create" if args.dry_run else "created"
    for rule in plan.create:
        print(
            f"{verb} {rule.principal} {rule.operation} {rule.resource}:{rule.pattern}:{rule.name}"
        )
    for rule in plan.delete:
        gone = "would delete" if args.dry_run else "deleted"
        print(
            f"{gone} {rule.principal} {rule.operation} {rule.resource}:{rule.pattern}:{rule.name}"
        )
    print(
        f"ACLs: {len(plan.create)} to create, {len(plan.present)} present, {len(plan.delete)} stale"
    )
    return 0


def _k8s(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.security.commands import k8s_topics  # noqa: PLC0415

    print(k8s_topics(settings, cluster=args.cluster, namespace=args.namespace), end="")
    return 0


def _gdpr(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.security.commands import gdpr_record  # noqa: PLC0415

    print(gdpr_record(settings), end="")
    return 0


def _native(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from caremesh.pseudonym import native  # noqa: PLC0415

    if args.action == "status":
        found = native.status()
        print(f"pseudonymisation engine: {found.describe()}")
        return 0 if found.active else 3
    try:
        built = native.build(force=args.force, quiet=args.quiet)
    except NativeBuildError as exc:
        print(f"caremesh native: {exc}", file=sys.stderr)
        print("caremesh native: the pure Python engine stays in use", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"pseudonymisation engine: {built.describe()}")
    return 0 if built.active else 1


def _org(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.security.admission import org_add, org_remove  # noqa: PLC0415

    if args.action == "add":
        if not args.territory:
            print("caremesh org add: --territory is required", file=sys.stderr)
            return 2
        done = org_add(
            settings,
            args.name,
            territory=args.territory,
            endpoint=args.endpoint,
            subscriptions=args.subscribe,
            mode=args.mode,
            fhir_release=args.fhir_release,
        )
        print(
            f"organisation {done.org}: topic {done.topic} {done.topic_action}, principal "
            f"{done.principal} credentials {'created' if done.credentials_created else 'kept'}, "
            f"{done.acls_created} ACLs created; password in {done.secret_file}"
        )
        return 0
    gone = org_remove(settings, args.name)
    print(
        f"organisation {gone.org}: {gone.acls_deleted} ACLs deleted, credentials "
        f"{'deleted' if gone.credentials_deleted else 'already absent'}; audit trail kept"
    )
    return 0


def _research(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path  # noqa: PLC0415

    if args.action == "follow":
        return _research_follow(args, settings)

    from caremesh.cli.research_export import export_study  # noqa: PLC0415
    from caremesh.errors import ConfigurationError  # noqa: PLC0415
    from caremesh.research.export import ExportFormat  # noqa: PLC0415
    from caremesh.research.sql_on_fhir import find_view  # noqa: PLC0415

    if (args.output is None) == (args.out is None):
        raise ConfigurationError("give the output once: OUT or --output PATH")
    views = [find_view(v) for v in args.view]
    summary = export_study(
        settings.kafka,
        args.study,
        ExportFormat(args.format),
        Path(args.output or args.out),
        views=views,
        progress=not args.quiet,
    )
    print(
        f"records: {summary.records}  pseudonyms: {summary.pseudonyms}  "
        f"retracted: {summary.retracted}  retractions: {summary.retractions}  "
        f"invalid: {summary.invalid}"
    )
    for name, rows in summary.tables.items():
        print(f"table {name}: {rows} rows")
    return 0


def _research_follow(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path  # noqa: PLC0415

    from caremesh.cli.research_follow import follow_study  # noqa: PLC0415
    from caremesh.research.sql_on_fhir import find_view  # noqa: PLC0415

    summary = follow_study(
        settings.kafka,
        args.study,
        [find_view(v) for v in args.view],
        Path(args.out),
        until_end=args.until_end,
    )
    print(
        f"read: {summary.read}  rows added: {summary.added}  rows deleted: {summary.deleted}  "
        f"retractions: {summary.retractions}  invalid: {summary.invalid}"
    )
    return 0


def _pseudonymise(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path  # noqa: PLC0415

    from caremesh.cli.pseudonymise import run_pseudonymise  # noqa: PLC0415

    return run_pseudonymise(
        settings,
        config=args.config,
        source=Path(args.input),
        target=Path(args.output),
        study=args.study,
        keys=args.keys,
        key_file=Path(args.key_file) if args.key_file else None,
        source_id=args.source,
        force=args.force,
        progress=not args.quiet,
    )


def _deadletter(args: argparse.Namespace, settings: Settings) -> int:
    from caremesh.cli.deadletter import run  # noqa: PLC0415

    return run(args, settings)


COMMANDS: dict[str, Handler] = {
    "ingest-api": _ingest_api,
    "mllp": _mllp,
    "import": _import,
    "kafka": _kafka,
    "topics": _topics,
    "worker": _worker,
    "demo": _demo,
    "demo-endpoints": _demo_endpoints,
    "inbox": _inbox,
    "consent-api": _consent_api,
    "deliver": _deliver,
    "research": _research,
    "pseudonymise": _pseudonymise,
    "acl": _acl,
    "k8s": _k8s,
    "gdpr": _gdpr,
    "org": _org,
    "deadletter": _deadletter,
    "native": _native,
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
        help="run the local Kafka broker (one node, or a three-node cluster)",
        description="Fetch Apache Kafka's jars from Maven Central once, then "
        "run a single-node KRaft broker on 127.0.0.1, or a cluster of three combined "
        "broker+controller nodes (--nodes 3: node i on CAREMESH_KAFKA__LOCAL_PORT + 2i).",
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
    kafka.add_argument(
        "--nodes",
        type=int,
        choices=[1, 3],
        default=None,
        help="1: the single node; 3: a local three-node cluster (default: "
        "CAREMESH_KAFKA__LOCAL_NODES, else 1)",
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
        help="run a stream worker",
        description="Run a stream worker with the stream stages (each a batch consumer in a "
        "thread of its own); scale out by starting more workers (partitions are the unit "
        "of parallelism).",
    )
    worker.add_argument(
        "--stage",
        action="append",
        default=None,
        metavar="NAME",
        choices=STAGES,
        help=f"run only this stage (repeatable; one of {', '.join(STAGES)}); default: all stages",
    )
    sub.add_parser(
        "ingest-api",
        help="serve the FHIR HTTP ingest API for source systems",
        description="Serve POST /fhir and POST /fhir/{type} on CAREMESH_HTTP_INGEST__HOST:PORT; "
        "answers 202 only after Kafka acknowledged the write.",
    )
    sub.add_parser(
        "mllp",
        help="serve the HL7 v2 MLLP listener",
        description="Accept HL7 v2 (ADT A01-A04/A08, ORU R01) over MLLP on "
        "CAREMESH_MLLP__HOST:PORT; ACK AA only after Kafka acknowledged the raw message.",
    )
    imp = sub.add_parser(
        "import",
        help="send NDJSON or Bundle files to the ingest topic",
        description="Validate FHIR NDJSON (one resource per line) and JSON Bundle/resource "
        "files (folders are searched recursively) and send the valid ones to ingest.fhir.v1. "
        "Exit code 4 when some input was rejected.",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    imp.add_argument("--source", required=True, help="the configured source id the data comes from")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    inbox = sub.add_parser(
        "inbox",
        help="run the care coordinators' web inbox",
        description="Serve the coordinators' alert inbox (sign-in, live alerts of their "
        "organisation, acknowledge and dismiss) on CAREMESH_INBOX__HOST:PORT.",
    )
    inbox.add_argument(
        "action",
        nargs="?",
        choices=["serve", "hash-password"],
        default="serve",
        help="serve (default): run the inbox; hash-password: read a password (prompt, or one "
        "line on stdin) and print the scrypt hash for CAREMESH_INBOX__COORDINATORS",
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
    demo.add_argument("--patients", type=int, default=2000, help="territory size (default 2000)")
    demo.add_argument(
        "--rate",
        type=float,
        default=150.0,
        help="events per second sent to the services (default 150)",
    )
    demo.add_argument("--seed", type=int, default=None, help="territory seed (default: random)")
    endpoints = sub.add_parser("demo-endpoints", help="stand-in provider FHIR endpoints (demo)")
    endpoints.add_argument("--port", type=int, required=True)
    sub.add_parser(
        "consent-api",
        help="serve the consent API (create, update, withdraw, list, decide)",
        description="Serve the authenticated consent API on CAREMESH_CONSENT_API__HOST/PORT; "
        "every change is appended to consent.events.v1 and audited.",
    )
    sub.add_parser(
        "deliver",
        help="deliver each organisation's outbox to its FHIR endpoint",
        description="Push outbox.<org>.v1 to each organisation's fhir_endpoint with retries, "
        "per-organisation isolation and a failed-delivery topic; /metrics on "
        "CAREMESH_DELIVERY__PORT.",
    )
    acl = sub.add_parser(
        "acl",
        help="apply the Kafka ACLs generated from the topic catalogue",
        description="Create one principal's ALLOW rules per component, organisation and study "
        "(deny by default), with the admin's credentials from CAREMESH_KAFKA__*. Idempotent.",
    )
    acl.add_argument("action", choices=["apply"])
    acl.add_argument("--dry-run", action="store_true", help="print what would change only")
    acl.add_argument(
        "--prune", action="store_true", help="also delete stale rules of caremesh's principals"
    )
    k8s = sub.add_parser(
        "k8s",
        help="print Strimzi KafkaTopic and KafkaUser resources",
        description="Print the catalogue's topics and the principals with their ACLs as Strimzi "
        "custom resources (kafka.strimzi.io/v1beta2).",
    )
    k8s.add_argument("action", choices=["topics"])
    k8s.add_argument("--cluster", default="caremesh", help="Strimzi Kafka cluster name")
    k8s.add_argument("--namespace", default=None, help="namespace of the resources")
    gdpr = sub.add_parser(
        "gdpr",
        help="print the GDPR Art. 30 record of processing",
        description="Print the record of processing (purposes, data categories, recipients, "
        "retention per topic) generated from the catalogue and configuration, as markdown.",
    )
    gdpr.add_argument("action", choices=["record"])
    org = sub.add_parser(
        "org",
        help="admit or remove a member organisation",
        description="add: create the organisation's outbox topic, principal, SCRAM credentials "
        "(password written to a 0600 file under the state dir), ACLs and registry entry, "
        "idempotently; remove: delete its ACLs and credentials, keeping its audit trail.",
    )
    org.add_argument("action", choices=["add", "remove"])
    org.add_argument("name", help="organisation id (letters, digits, '-', '_')")
    org.add_argument("--territory", default=None, help="the territory it joins (add)")
    org.add_argument("--endpoint", default=None, help="its FHIR endpoint base URL (add)")
    org.add_argument(
        "--fhir-release",
        choices=["R4", "R4B", "R5"],
        default="R4",
        help="the FHIR release its endpoint takes; delivery converts to it (add; default R4)",
    )
    org.add_argument(
        "--subscribe",
        action="append",
        default=None,
        metavar="TYPE",
        help="a resource type it subscribes to (repeatable; default: a care set)",
    )
    org.add_argument(
        "--mode",
        choices=["rest", "transaction"],
        default="rest",
        help="how its FHIR endpoint receives (add): an update per resource, or a transaction "
        "Bundle per patient batch with conditional updates by identifier (default: rest)",
    )
    research = sub.add_parser(
        "research",
        help="researchers' tools (export a study stream)",
        description="Tools for a study's researchers; they read only research.<study>.v1.",
    )
    research_sub = research.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = research_sub.add_parser(
        "export",
        help="write a study topic to NDJSON or Parquet, or to tables through SQL on FHIR views",
        description="Read research.<study>.v1 from its beginning to its current end (outside "
        "any consumer group, so it finishes), drop the records of retracted pseudonyms that came "
        "before their retraction, and write NDJSON (one resource per line) or Parquet "
        "(pseudonym, resourceType, id, keyId, effective, code, resource). With --view (SQL on "
        "FHIR v2 ViewDefinitions), write one table per view instead: OUT/<view>.parquet or "
        "OUT/<view>.csv, or a table per view in the DuckDB file OUT. Prints a summary.",
        epilog="example: caremesh research export --study cohort-hf --view patients.json "
        "--view observations.json --format duckdb cohort.duckdb",
    )
    export.add_argument("--study", required=True, help="the study id (research.<id>.v1)")
    export.add_argument(
        "--format", choices=["ndjson", "parquet", "csv", "duckdb"], default="ndjson"
    )
    export.add_argument(
        "--view",
        action="append",
        default=[],
        metavar="VIEW.json",
        help="a SQL on FHIR v2 ViewDefinition (repeatable; a shipped view by its name, e.g. "
        "'patients', or a file)",
    )
    export.add_argument("out", nargs="?", metavar="OUT", help="the file or directory to write")
    export.add_argument("--output", metavar="PATH", help="the same as OUT")
    export.add_argument(
        "--from-beginning",
        action="store_true",
        help="read from the first retained offset (the default, and the only mode)",
    )
    export.add_argument(
        "--until-end",
        action="store_true",
        help="stop at the end offsets read at start (the default, and the only mode)",
    )
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    follow = research_sub.add_parser(
        "follow",
        help="keep a DuckDB file of SQL on FHIR view tables up to date from a study topic",
        description="Read research.<study>.v1 from the offsets stored in the DuckDB file OUT "
        "(its first retained offset the first time), add each view's rows, delete the rows of a "
        "retracted pseudonym, and commit rows and offsets together, so that a restarted follower "
        "resumes without duplicates. Query the tables named after the views. Runs until "
        "interrupted (Ctrl-C, SIGTERM), or with --until-end until it caught up.",
        epilog="example: caremesh research follow --study cohort-hf --view patients "
        "--view observations --format duckdb cohort.duckdb",
    )
    follow.add_argument("--study", required=True, help="the study id (research.<id>.v1)")
    follow.add_argument(
        "--view",
        action="append",
        required=True,
        metavar="VIEW.json",
        help="a SQL on FHIR v2 ViewDefinition (repeatable; a shipped view's name or a file)",
    )
    follow.add_argument("--format", choices=["duckdb"], default="duckdb")
    follow.add_argument("out", metavar="OUT", help="the DuckDB file to keep up to date")
    follow.add_argument(
        "--until-end", action="store_true", help="stop once the end read at start is reached"
    )
    _pseudonymise_parser(sub)
    native = sub.add_parser(
        "native",
        help="compile the pseudonymisation engine's hot modules (mypyc)",
        description="build: compile the research pseudonymisation engine's hot modules with "
        "mypyc (needs the dev extra, a C compiler and the Python headers) unless a build of the "
        "current sources is already there; they are then used by every process, and only while "
        "their sources are unchanged (an edited source runs as pure Python until the next "
        "build). status: say which form is in use and why (exit 3 when pure Python). "
        "CAREMESH_NATIVE=0 turns the compiled form off; CAREMESH_NATIVE_DIR moves the build.",
    )
    native.add_argument("action", choices=["build", "status"])
    native.add_argument("--force", action="store_true", help="rebuild even if up to date")
    native.add_argument("--quiet", action="store_true", help="print errors only")
    from caremesh.cli.deadletter import add_parser as deadletter_parser  # noqa: PLC0415

    deadletter_parser(sub)
    return parser


def _pseudonymise_parser(sub: Any) -> None:
    from caremesh.pseudonym.presets import preset_names  # noqa: PLC0415

    pseudo = sub.add_parser(
        "pseudonymise",
        help="apply research pseudonymisation rules to FHIR JSON/NDJSON files offline",
        description="Pseudonymise FHIR files with the research rule engine, as the research "
        "stage would for a study: IN and OUT are files (.json: one resource or Bundle; "
        ".ndjson/.jsonl: one resource per line) or folders (searched recursively, tree mirrored). "
        "Keys are derived from the master key (CAREMESH_PSEUDONYM__MASTER_KEY, a secret file "
        "under CAREMESH_SECRETS_DIR, or --key-file) for --study, or with --keys rule-file taken "
        "from the rule file's parameters as the upstream anonymizer does. Records that cannot "
        "be read or pseudonymised are skipped and listed by file:line and error code; exit "
        "code 4 then.",
        epilog="example: caremesh pseudonymise --config gdpr-research exports/ pseudonymised/",
    )
    pseudo.add_argument(
        "--config",
        required=True,
        metavar="RULES",
        help=f"a shipped rule preset ({', '.join(preset_names())}) or the path of an anonymizer "
        "rule file (FHIR-Tools-for-Anonymization format)",
    )
    pseudo.add_argument("input", metavar="IN", help="input file or folder")
    pseudo.add_argument("output", metavar="OUT", help="output file or folder")
    pseudo.add_argument(
        "--study",
        default="offline",
        help="study whose derived keys are used (default: offline); the same study name gives "
        "the same hashes, date shifts and pseudonyms as that study's research stream",
    )
    pseudo.add_argument(
        "--keys",
        choices=["derived", "rule-file"],
        default="derived",
        help="derived (default): the study's keys, derived from the master key; rule-file: the "
        "keys in the rule file's parameters (cryptoHashKey, dateShiftKey, encryptKey), giving "
        "the upstream anonymizer's output; no master key is read",
    )
    pseudo.add_argument(
        "--key-file", metavar="FILE", help="read the master key (hex or text) from this file"
    )
    pseudo.add_argument(
        "--source",
        default="offline",
        help="source id scoping local patient ids without an INS (default: offline)",
    )
    pseudo.add_argument("--force", action="store_true", help="overwrite existing outputs")
    pseudo.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `caremesh` console script."""
    args = build_parser().parse_args(argv)
    try:
        secrets_dir = os.environ.get("CAREMESH_SECRETS_DIR")
        settings = Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
    except ValidationError as exc:
        print(f"caremesh: invalid configuration: {settings_problems(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"caremesh: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return COMMANDS[args.command](args, settings)
    except ConfigurationError as exc:
        print(f"caremesh {args.command}: {exc}", file=sys.stderr)
        return 2
    except CaremeshError as exc:
        print(f"caremesh {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
