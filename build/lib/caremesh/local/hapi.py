"""The local HAPI FHIR server (hapi_server/): built once with Maven, started on 127.0.0.1, stopped.

A provider's FHIR endpoint for tests and the demo: HAPI FHIR's RestfulServer (HAPI FHIR 8.6.5
from Maven Central) with every resource type in memory, referential integrity and HAPI's
validator on each request, and `$validate`. `build` compiles the small Java program of
hapi_server/ and copies its jars into a cache, once per source version; `up` starts one
server for a FHIR release (R4 or R5) on a given port and waits until `/metadata` answers;
`down` stops that process by its handle, never by name. The Maven project ships inside the
package (an installed wheel has it too); its build output goes to `$XDG_CACHE_HOME/caremesh/hapi`
(default ~/.cache/caremesh/hapi), never into the source tree.

    python -m caremesh.local.hapi build                       # what scripts/bootstrap.sh runs
    python -m caremesh.local.hapi up --port 8090 --release R4  # in the foreground, Ctrl-C stops
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from caremesh.errors import LocalHapiError
from caremesh.settings import default_cache_dir

log = logging.getLogger(__name__)

Release = Literal["R4", "R5"]
RELEASES: tuple[Release, ...] = ("R4", "R5")
MAIN_CLASS = "org.caremesh.hapi.Main"
DEFAULT_HOME = Path(__file__).resolve().parent / "hapi_server"
JAR = "caremesh-local-hapi.jar"
HEAP: dict[Release, str] = {"R4": "512m", "R5": "1g"}
"""JVM heap per release: HAPI's R5 validator holds the whole R5 core package (about 700 MB)."""


@dataclass(frozen=True, slots=True)
class HapiProcess:
    """One running server: its process, where it answers and where it logs."""

    process: subprocess.Popen[bytes]
    port: int
    release: Release
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def log(self) -> str:
        """The server's log (HAPI's warnings and errors; request bodies are never logged)."""
        return self.log_path.read_text(errors="replace")


class LocalHapi:
    """Builds and runs the server of `home` (hapi_server/), its build output in `cache`."""

    def __init__(self, home: Path = DEFAULT_HOME, cache: Path | None = None) -> None:
        self.home = home
        self.cache = cache if cache is not None else default_cache_dir() / "hapi"
        self.libs = self.cache / "libs"
        self.jar = self.cache / "build" / JAR
        self._stamp = self.cache / ".sources.sha256"

    # -- build ------------------------------------------------------------------------------

    def _sources_digest(self) -> str:
        digest = hashlib.sha256()
        for path in [self.home / "pom.xml", *sorted((self.home / "src").rglob("*.java"))]:
            digest.update(path.relative_to(self.home).as_posix().encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def built(self) -> bool:
        """True when the jar and libraries of the current sources are in the cache."""
        return (
            self.jar.is_file()
            and self._stamp.is_file()
            and self._stamp.read_text().strip() == self._sources_digest()
        )

    def build(self) -> None:
        """Compile the server and copy its run-time jars with Maven, once per source version."""
        if self.built():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalHapiError("Maven (mvn) is needed to build the local HAPI FHIR server")
        log.info("building the local HAPI FHIR server with Maven into %s", self.cache)
        for stale in (self.libs, self.cache / "build"):
            if stale.exists():
                shutil.rmtree(stale)
        cmd = [mvn, "-q", "-B", "-f", str(self.home / "pom.xml"), "package"]
        cmd.append(f"-Dhapi.cache={self.cache}")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise LocalHapiError(f"Maven could not build the local HAPI FHIR server:\n{tail}")
        self._stamp.write_text(self._sources_digest())

    def classpath(self) -> str:
        jars = [str(self.jar), *sorted(str(p) for p in self.libs.glob("*.jar"))]
        return os.pathsep.join(jars)

    # -- process ----------------------------------------------------------------------------

    def command(self, port: int, release: Release) -> list[str]:
        """The java command line of one server."""
        return [
            _java(),
            "-Xms64m",
            f"-Xmx{HEAP[release]}",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            self.classpath(),
            MAIN_CLASS,
            "--port",
            str(port),
            "--release",
            release,
        ]

    def up(
        self, port: int, release: Release = "R4", log_path: Path | None = None, wait: float = 180.0
    ) -> HapiProcess:
        """Build if needed, start a server on 127.0.0.1:`port` and wait until it answers."""
        if release not in RELEASES:
            raise LocalHapiError(f"the local HAPI FHIR server runs R4 or R5, not {release}")
        self.build()
        log_path = log_path or self.cache / f"hapi-{release.lower()}-{port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            process = subprocess.Popen(  # noqa: S603
                self.command(port, release),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = HapiProcess(process, port, release, log_path)
        log.info(
            "started the local HAPI FHIR %s server (pid %d) on port %d", release, process.pid, port
        )
        try:
            wait_ready(server, wait)
        except LocalHapiError:
            down(server)
            raise
        return server


def wait_ready(server: HapiProcess, timeout: float = 180.0) -> None:
    """Wait until GET [base]/metadata answers 200; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise LocalHapiError(
                f"the HAPI FHIR server exited ({server.process.returncode}) during start-up; "
                f"see {server.log_path}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/metadata", timeout=5).status_code == 200:
                return
        time.sleep(0.3)
    raise LocalHapiError(f"the HAPI FHIR server did not answer within {timeout:.0f}s")


def down(server: HapiProcess, wait: float = 15.0) -> None:
    """Stop the server's process (SIGTERM, then SIGKILL after `wait` seconds)."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(wait)
    except subprocess.TimeoutExpired:
        log.warning("HAPI FHIR server pid %d ignored SIGTERM; killing it", server.process.pid)
        server.process.kill()
        server.process.wait()
    log.info("stopped the local HAPI FHIR server (pid %d)", server.process.pid)


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise LocalHapiError("Java 17 or newer is needed to run the local HAPI FHIR server")
    return java


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caremesh.local.hapi", description=__doc__)
    parser.add_argument("action", choices=["build", "up"])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--release", choices=RELEASES, default="R4")
    args = parser.parse_args(argv)
    hapi = LocalHapi()
    try:
        if args.action == "build":
            hapi.build()
            print(f"local HAPI FHIR server built in {hapi.cache}")
            return 0
        server = hapi.up(args.port, args.release)
    except LocalHapiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"HAPI FHIR {server.release} answers on {server.base_url} (pid {server.process.pid})")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        down(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
