"""Run a Faust worker with the selected stages registered on the app."""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from faust import Worker

from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings
from caremesh.streams.app import CaremeshApp, create_app
from caremesh.streams.batch import ensure_compacted

log = logging.getLogger(__name__)

StageInstaller = Callable[[CaremeshApp, Settings], None]


def stage_installers() -> dict[str, StageInstaller]:
    """The stages a worker can run, by name. Each installs its agents on the app."""
    from caremesh.streams import hl7v2, pathways, research, share, validate  # noqa: PLC0415

    return {
        "hl7v2": hl7v2.install,
        "validate": validate.install,
        "share": share.install,
        "pathways": pathways.install,
        "research": research.install,
    }


def build_worker_app(settings: Settings, stages: Sequence[str] | None = None) -> CaremeshApp:
    """The app with the selected stages (all when `stages` is None)."""
    app = create_app(settings, Metrics())
    installers = stage_installers()
    unknown = set(stages or ()) - set(installers)
    if unknown:
        raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}")
    for name, install in installers.items():
        if stages is None or name in stages:
            install(app, settings)
    for runner in app.caremesh_batch_stages:
        runner.session_timeout = settings.worker.session_timeout_seconds
    return app


def run_worker(settings: Settings, stages: Sequence[str] | None = None) -> int:
    """Run until stopped (SIGINT/SIGTERM); returns the process exit code."""
    app = build_worker_app(settings, stages)
    log.info(
        "worker starting: app=%s stages=%s metrics=http://%s:%d/metrics",
        settings.worker.app_id,
        ",".join(stages or stage_installers()) or "none",
        settings.worker.web_host,
        settings.worker.web_port,
    )
    if not app.agents:
        # Only batch stages: no Faust runtime (its event loop would take the GIL for nothing).
        return run_batch_only(app, settings)
    ensure_changelogs(app, settings)
    for stage in app.caremesh_batch_stages:
        stage.start()
        atexit.register(stage.stop)
    worker = Worker(app, loglevel=settings.log_level, override_logging=False)
    worker.execute_from_commandline()
    return 0


def ensure_changelogs(app: CaremeshApp, settings: Settings) -> None:
    """Create the Faust tables' changelog topics (compacted, partitioned like their source
    topics, every partition led) before the worker joins its group.

    Left to Faust, they are created while the group forms. Once in the demo, the group's
    metadata snapshot caught a changelog topic half-created, and every table write of that
    process then failed with PartitionsMismatch (each record of the pathways and research
    stages dead-lettered) until a restart."""
    for table in app.tables.values():
        ensure_compacted(
            settings.kafka,
            table.changelog_topic_name,
            table.partitions or app.conf.topic_partitions,
            settings.kafka.replication_factor,
        )


def run_batch_only(app: CaremeshApp, settings: Settings) -> int:
    """Run batch stages with a small HTTP server for /metrics and /health, until a signal."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = _status_server(app, settings)
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    for stage in app.caremesh_batch_stages:
        stage.start()
    stop.wait()
    for stage in app.caremesh_batch_stages:
        stage.stop()
    server.shutdown()
    return 0


def _status_server(app: CaremeshApp, settings: Settings) -> ThreadingHTTPServer:
    metrics = app.caremesh_metrics

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = metrics.render(), PROMETHEUS_CONTENT_TYPE
            elif self.path == "/health":
                ready = all(stage.ready for stage in app.caremesh_batch_stages)
                body, kind = orjson.dumps({"status": "ok", "ready": ready}), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # no access log

    return ThreadingHTTPServer((settings.worker.web_host, settings.worker.web_port), Status)
