"""Run a worker process with the selected stages."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from caremesh.heap import freeze_startup_objects
from caremesh.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from caremesh.settings import Settings, WorkerSettings
from caremesh.streams.batch import WorkerApp

log = logging.getLogger(__name__)

StageInstaller = Callable[[WorkerApp, Settings], None]


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


def build_worker_app(settings: Settings, stages: Sequence[str] | None = None) -> WorkerApp:
    """The worker's stages (all when `stages` is None)."""
    app = WorkerApp(Metrics())
    installers = stage_installers()
    unknown = set(stages or ()) - set(installers)
    if unknown:
        raise ValueError(f"unknown stage(s): {', '.join(sorted(unknown))}")
    for name, install in installers.items():
        if stages is None or name in stages:
            install(app, settings)
    for runner in app.stages:
        runner.session_timeout = settings.worker.session_timeout_seconds
    return app


def run_worker(settings: Settings, stages: Sequence[str] | None = None) -> int:
    """Run until stopped (SIGINT/SIGTERM); returns the process exit code.

    Every stage is a batch runner in a thread of its own (`streams/batch.py`); a small HTTP
    server answers /metrics and /health."""
    app = build_worker_app(settings, stages)
    log.info(
        "worker starting: app=%s stages=%s metrics=http://%s:%d/metrics",
        settings.worker.app_id,
        ",".join(stages or stage_installers()) or "none",
        settings.worker.web_host,
        settings.worker.web_port,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = _status_server(app, settings.worker)
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    tune_interpreter(settings.worker)
    for stage in app.stages:
        stage.start()
    stop.wait()
    for stage in app.stages:
        stage.stop()
    server.shutdown()
    return 0


def tune_interpreter(worker: WorkerSettings) -> None:
    """Set the thread switch interval (`worker.switch_interval_ms`) and leave what
    start-up built (modules, FHIR model classes, schemas, topic catalogue) out of every later
    garbage collection: each resource makes thousands of short-lived objects, and the full
    collections they trigger would otherwise walk all of that again."""
    sys.setswitchinterval(worker.switch_interval_ms / 1000)
    freeze_startup_objects()


def _status_server(app: WorkerApp, worker: WorkerSettings) -> ThreadingHTTPServer:
    metrics = app.metrics

    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = metrics.render(), PROMETHEUS_CONTENT_TYPE
            elif self.path == "/health":
                body = orjson.dumps({"status": "ok", "ready": app.ready})
                kind = "application/json"
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

    return ThreadingHTTPServer((worker.web_host, worker.web_port), Status)
