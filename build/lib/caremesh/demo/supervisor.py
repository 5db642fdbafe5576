"""Start caremesh services as child processes, watch them, and stop every one of them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


@dataclass
class Service:
    """One child process: a `caremesh` subcommand with its own log file."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Owns a group of services; `stop_all` ends exactly the processes it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Service:
        """Run `python -m caremesh.cli.main ARGS` with the extra environment, logging to a file."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service = Service(name, list(args), dict(env or {}))
        service.log_path = self.log_dir / f"{name}.log"
        service.log_file = service.log_path.open("ab")
        full_env = {**os.environ, **service.env}
        service.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "caremesh.cli.main", *service.args],
            env=full_env,
            stdout=service.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.info("started %s (pid %d), log %s", name, service.process.pid, service.log_path)
        self.services.append(service)
        return service

    def failed(self) -> list[Service]:
        """Services that exited on their own."""
        return [s for s in self.services if s.process is not None and s.process.poll() is not None]

    def stop_all(self, timeout: float = 45.0) -> None:
        """SIGTERM every service still running, then SIGKILL what is left after `timeout`."""
        for service in reversed(self.services):
            if service.running and service.process is not None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in self.services:
            proc = service.process
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop on SIGTERM; killing it", service.name)
                proc.kill()
                proc.wait(timeout=10)
            if service.log_file is not None:
                service.log_file.close()
        log.info("stopped %d services", len(self.services))
