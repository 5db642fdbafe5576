"""The local KRaft node: fetch its jars from Maven Central, format, start, stop.

One `LocalKafka` runs the single node, or one node of the local cluster (`local_cluster`); its
ports and folders come from `local_layout`. Used by `caremesh kafka up | down | status`, CI,
tests, benchmarks and the demo. The broker binds to 127.0.0.1 only. `up` is idempotent (a
running broker is reused, the jars are fetched once) and `down` stops the broker by the pid it
recorded, never by name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from caremesh.errors import LocalKafkaError
from caremesh.kafka import local_layout
from caremesh.kafka import local_secured as secured_broker
from caremesh.kafka.local_layout import NodeLayout
from caremesh.settings import KafkaSettings

log = logging.getLogger(__name__)

STORAGE_TOOL = "kafka.tools.StorageTool"
SERVER_MAIN = "kafka.Kafka"


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What `status` found."""

    running: bool
    pid: int | None
    answering: bool
    bootstrap: str


class LocalKafka:
    """Runs one local node: by default the single node `KafkaSettings` describe; given `node`
    and the cluster's `nodes`, that node of the cluster."""

    def __init__(
        self,
        settings: KafkaSettings,
        node: NodeLayout | None = None,
        nodes: list[NodeLayout] | None = None,
    ) -> None:
        self.settings = settings
        self.node = node or local_layout.single_node(settings)
        self.nodes = nodes or [self.node]
        self.home = settings.local_home
        self.data_dir = self.node.data_dir
        self.secret_dir = settings.local_data_dir  # one broker password for every node
        self.libs = settings.local_cache_dir / "libs"
        self.pid_file = self.node.pid_file
        self.bootstrap = self.node.bootstrap

    # -- jars -------------------------------------------------------------------------------

    def _pom_digest(self) -> str:
        return hashlib.sha256((self.home / "pom.xml").read_bytes()).hexdigest()

    def jars_present(self) -> bool:
        """True when the jars of the pinned pom are in the cache."""
        stamp = self.libs / ".pom.sha256"
        return stamp.is_file() and stamp.read_text().strip() == self._pom_digest()

    def fetch_jars(self) -> None:
        """Resolve the broker jars with Maven into the cache folder, once per pom version."""
        if self.jars_present():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError("Maven (mvn) is needed to fetch the Kafka jars; install it")
        log.info("fetching Kafka jars with Maven into %s", self.libs)
        if self.libs.exists():
            shutil.rmtree(self.libs)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-Dkafka.libs={self.libs}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise LocalKafkaError(f"Maven could not resolve the Kafka jars:\n{tail}")
        (self.libs / ".pom.sha256").write_text(self._pom_digest())

    def classpath(self) -> str:
        """The broker's classpath: every jar of the cache."""
        return os.pathsep.join(sorted(str(p) for p in self.libs.glob("*.jar")))

    # -- process ----------------------------------------------------------------------------

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        if java_home and (Path(java_home) / "bin" / "java").is_file():
            return str(Path(java_home) / "bin" / "java")
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError("Java 17 or newer is needed to run the local broker")
        return java

    def _recorded_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) and _is_java(pid) else None

    def answering(self, timeout: float = 2.0) -> bool:
        """True when the broker answers a metadata request."""
        if not _port_open("127.0.0.1", self.node.port):
            return False
        from confluent_kafka import KafkaException  # noqa: PLC0415
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "log_level": 0, **self.admin_security()}
        )
        try:
            admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def status(self) -> BrokerStatus:
        """Whether the recorded broker process runs and answers."""
        pid = self._recorded_pid()
        return BrokerStatus(
            pid is not None, pid, self.answering() if pid else False, self.bootstrap
        )

    # -- secured profile (CAREMESH_KAFKA__LOCAL_SECURED) --------------------------------------

    def _admin_credentials(self) -> tuple[str, str]:
        if not self.settings.username or self.settings.password is None:
            raise LocalKafkaError(
                "the secured local broker needs its admin: set CAREMESH_KAFKA__USERNAME and "
                "CAREMESH_KAFKA__PASSWORD"
            )
        return self.settings.username, self.settings.password.get_secret_value()

    def _broker_password(self) -> str:
        """The broker principal's password: configured, or generated once into the data dir."""
        if self.settings.local_broker_password is not None:
            return self.settings.local_broker_password.get_secret_value()
        path = self.secret_dir / "broker.secret"
        if not path.is_file():
            self.secret_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _tls(self) -> secured_broker.TlsFiles | None:
        s = self.settings
        if s.local_ssl_keystore is None:
            return None
        if s.local_ssl_truststore is None or s.local_ssl_keystore_password is None:
            raise LocalKafkaError(
                "a TLS listener needs CAREMESH_KAFKA__LOCAL_SSL_TRUSTSTORE and "
                "CAREMESH_KAFKA__LOCAL_SSL_KEYSTORE_PASSWORD too"
            )
        return secured_broker.TlsFiles(
            s.local_ssl_keystore,
            s.local_ssl_truststore,
            s.local_ssl_keystore_password.get_secret_value(),
        )

    def admin_security(self) -> dict[str, str]:
        """The admin's confluent-kafka security properties for this broker ({} if plaintext)."""
        if not self.settings.local_secured:
            return {}
        user, password = self._admin_credentials()
        config = {
            "security.protocol": secured_broker.client_protocol(self._tls()),
            "sasl.mechanism": secured_broker.SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": password,
        }
        if self.settings.ssl_cafile is not None and self._tls() is not None:
            config["ssl.ca.location"] = str(self.settings.ssl_cafile)
        return config

    def _scram_users(self) -> dict[str, str]:
        user, password = self._admin_credentials()
        users = {k: v.get_secret_value() for k, v in self.settings.local_scram_users.items()}
        users[secured_broker.BROKER_USER] = self._broker_password()
        users[user] = password
        return users

    def _write_config(self) -> Path:
        values = local_layout.node_values(self.node, self.nodes)
        if self.settings.local_secured:
            admin_user, _ = self._admin_credentials()
            text = secured_broker.secured_properties(
                (self.home / "server-secured.properties.in").read_text(),
                node_values=values,
                broker_password=self._broker_password(),
                admin_user=admin_user,
                tls=self._tls(),
            )
            path = self.data_dir / "server.properties"
            path.unlink(missing_ok=True)
            path.touch(mode=0o600)
            path.write_text(text)
            return path
        text = local_layout.fill((self.home / "server.properties.in").read_text(), values)
        path = self.data_dir / "server.properties"
        path.write_text(text)
        return path

    def formatted_cluster_id(self) -> str | None:
        """The cluster id this node's storage was formatted with, or None if not formatted."""
        try:
            text = (self.node.log_dirs / "meta.properties").read_text()
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
        return None

    def new_cluster_id(self) -> str:
        """A fresh cluster id (StorageTool random-uuid)."""
        uuid = subprocess.run(  # noqa: S603
            [self._java(), "-cp", self.classpath(), STORAGE_TOOL, "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
        )
        cluster_id = uuid.stdout.strip().splitlines()[-1] if uuid.returncode == 0 else ""
        if not cluster_id:
            raise LocalKafkaError(f"StorageTool random-uuid failed: {uuid.stderr[-1000:]}")
        return cluster_id

    def _format(self, config: Path, cluster_id: str | None = None) -> None:
        if self.formatted_cluster_id() is not None:
            return
        secured = self.settings.local_secured
        java = self._java()
        cp = self.classpath()
        cluster_id = cluster_id or self.new_cluster_id()
        fmt = subprocess.run(  # noqa: S603
            [
                java,
                "-cp",
                cp,
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
                f"-Dkafka.logs.dir={self.data_dir}",  # not the caller's working directory
                STORAGE_TOOL,
                "format",
                "-t",
                cluster_id,
                "-c",
                str(config),
                *(secured_broker.scram_format_args(self._scram_users()) if secured else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            detail = (fmt.stdout + fmt.stderr)[-1000:]
            if secured:  # the tool may echo its arguments, and they hold passwords
                detail = "see the arguments' syntax (output withheld: it may hold passwords)"
            raise LocalKafkaError(f"StorageTool format failed: {detail}")
        log.info("formatted KRaft storage in %s", self.data_dir / "logs")

    def up(self, wait: float = 90.0) -> BrokerStatus:
        """Start the broker unless it already runs; wait until it answers a metadata request."""
        pid = self._recorded_pid()
        if pid is not None and self.answering():
            log.info("local Kafka already running (pid %d) on %s", pid, self.bootstrap)
            return BrokerStatus(True, pid, True, self.bootstrap)
        self.fetch_jars()
        pid = self.start()
        return self.wait_answering(pid, wait)

    def check_ports(self) -> None:
        """Refuse ports taken by a process this node did not start."""
        if self._recorded_pid() is not None:
            return
        for port in (self.node.port, self.node.controller_port):
            if _port_open("127.0.0.1", port):
                raise LocalKafkaError(
                    f"port {port} is taken by a process this command did not start; stop it "
                    "or set CAREMESH_KAFKA__LOCAL_PORT"
                )

    def start(self, cluster_id: str | None = None) -> int:
        """Write the config, format the storage (once, with `cluster_id` if given) and start the
        node's process unless it runs; returns its pid without waiting for it to answer."""
        pid = self._recorded_pid()
        if pid is None:
            self.check_ports()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            config = self._write_config()
            self._format(config, cluster_id)
            out = (self.data_dir / "kafka.out").open("ab")
            cmd = [
                self._java(),
                "-Xms256m",
                f"-Xmx{self.settings.local_heap}",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.yaml'}",
                f"-Dkafka.logs.dir={self.data_dir}",
                "-cp",
                self.classpath(),
                SERVER_MAIN,
                str(config),
            ]
            proc = subprocess.Popen(  # noqa: S603
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.data_dir,
            )
            out.close()
            pid = proc.pid
            self.pid_file.write_text(str(pid))
            log.info("started local Kafka (pid %d) on %s", pid, self.bootstrap)
        return pid

    def wait_answering(self, pid: int, wait: float) -> BrokerStatus:
        """Wait until the node answers a metadata request; fail if its process ends first."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise LocalKafkaError(
                    f"the broker exited during start-up; see {self.data_dir / 'kafka.out'}"
                )
            if self.answering():
                return BrokerStatus(True, pid, True, self.bootstrap)
            time.sleep(0.5)
        raise LocalKafkaError(f"the broker did not answer within {wait:.0f}s")

    def stop_signal(self) -> int | None:
        """Send SIGTERM to the recorded broker; its pid, or None if none was running."""
        pid = self._recorded_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        return pid

    def down(self, wait: float = 30.0) -> bool:
        """Stop the recorded broker (SIGTERM, then SIGKILL); True if one was running."""
        pid = self.stop_signal()
        if pid is None:
            return False
        self.await_exit(pid, wait)
        return True

    def await_exit(self, pid: int, wait: float = 30.0) -> None:
        """Wait for a signalled broker to end (SIGKILL after `wait` seconds)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            log.warning("broker pid %d ignored SIGTERM; sending SIGKILL", pid)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        log.info("stopped local Kafka (pid %d)", pid)

    def reset(self) -> None:
        """Stop the broker and delete its data (a fresh cluster on the next `up`)."""
        self.down()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _is_java(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True  # no /proc: trust the pid file
    return SERVER_MAIN.encode() in cmdline


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
