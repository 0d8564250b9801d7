"""The local single-node Apache Kafka broker (KRaft, no Docker) that ``k2 broker`` manages.

Files, with ``dist = <cache_dir>/kafka-<scala>-<version>``::

    dist/libs/*.jar                   the broker's jars, fetched once by Maven and shared by clones
    dist/COMPLETE                     written before dist is renamed into place
    <state_dir>/server.properties     rendered on every start from the settings
    <state_dir>/log4j2.yaml           the packaged logging configuration
    <state_dir>/data/                 log.dirs, formatted once with a fresh cluster id
    <state_dir>/logs/server.log       the broker's full INFO log
    <state_dir>/broker.out            stdout/stderr: WARN and above, plus JVM crashes
    <state_dir>/broker.pid            pid of the running broker

Invariants:

* A fetch either leaves a complete ``dist`` or none: jars land in a temporary directory that is
  renamed into place only after Maven succeeded, so a killed fetch never leaves a half cache.
* The broker counts as running only if the pid file names a live ``kafka.Kafka`` process started
  with *this* state dir's ``server.properties`` and its port accepts connections. A stale pid
  file (after a reboot, or a pid reused by another program) never turns ``start()`` into a no-op.
* ``start()`` and ``stop()`` hold a file lock in the state dir, and ``fetch()`` one in the cache
  dir, so two processes starting the same broker at once end up sharing one broker.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psutil
from confluent_kafka import KafkaException

from k2.broker.topics import admin_client, ensure_k2_topics, list_topics
from k2.config import BrokerSettings, KafkaSettings
from k2.errors import BrokerError
from k2.logs import get_logger

__all__ = ["BrokerStatus", "LocalBroker", "new_cluster_id", "render_server_properties"]

_MAIN_CLASS = "kafka.Kafka"
_MARKER = "COMPLETE"
_MAVEN_TIMEOUT_S = 900.0
_TAIL_LINES = 40

log = get_logger("broker")


@dataclass(frozen=True)
class BrokerStatus:
    """What an operator asks first: is it up, which process, where to connect, which topics."""

    running: bool
    pid: int | None
    bootstrap: str
    topics: list[str] = field(default_factory=list)


def render_server_properties(broker: BrokerSettings, kafka: KafkaSettings) -> str:
    """The broker's ``server.properties``: one node that is both broker and KRaft controller.

    Tuned for a development box: replication factors of one (there is one node), no topic
    auto-creation (a misspelt topic must fail, not appear), no rebalance delay (tests and
    restarts join groups at once), and bounded disk use.
    """
    listener = f"PLAINTEXT://{broker.host}:{broker.port}"
    controller = f"CONTROLLER://{broker.host}:{broker.controller_port}"
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@{broker.host}:{broker.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"{listener},{controller}",
        "advertised.listeners": listener,
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(broker.state_dir / "data"),
        "num.partitions": kafka.partitions,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        # A day of data, at most 1 GiB per partition, in 128 MiB segments.
        "log.retention.hours": 24,
        "log.retention.bytes": 1 << 30,
        "log.segment.bytes": 128 << 20,
        "log.retention.check.interval.ms": 60_000,
        # Generous, so a large batch from a feed is never the reason a produce fails.
        "message.max.bytes": 16 << 20,
        "replica.fetch.max.bytes": 16 << 20,
        "num.recovery.threads.per.data.dir": 2,
    }
    lines = ["# Written by k2 on every `k2 broker start`; edit the k2 settings, not this file."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in unpadded base64url, as ``kafka-storage random-uuid``.

    Ids starting with ``-`` are skipped (as Kafka does) because they parse as a CLI option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalBroker:
    """Fetch, format, start, stop and inspect the local broker described by ``BrokerSettings``."""

    def __init__(self, broker: BrokerSettings, kafka: KafkaSettings) -> None:
        # Absolute paths: they end up in the broker's command line, which identifies it later.
        # expanduser here too: pydantic does not run BrokerSettings' validator on its defaults.
        self.settings = broker.model_copy(
            update={
                "state_dir": broker.state_dir.expanduser().resolve(),
                "cache_dir": broker.cache_dir.expanduser().resolve(),
            }
        )
        self._kafka = kafka
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / "server.log"

    @property
    def dist_dir(self) -> Path:
        return self.settings.cache_dir / f"kafka-{self.settings.scala_version}-{self.settings.kafka_version}"

    # ----------------------------------------------------------------- fetch

    def fetch(self) -> Path:
        """Make sure the broker's jars are in the cache and return their directory."""
        libs = self.dist_dir / "libs"
        if (self.dist_dir / _MARKER).exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found on PATH: Maven is needed once to fetch the Kafka jars")
        self.dist_dir.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.dist_dir.parent / f"{self.dist_dir.name}.lock"):
            if not (self.dist_dir / _MARKER).exists():  # another process may have fetched meanwhile
                self._fetch_locked(mvn)
        return libs

    def _fetch_locked(self, mvn: str) -> None:
        for leftover in self.dist_dir.parent.glob(f".{self.dist_dir.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a fetch that was killed
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.dist_dir.name}-", dir=self.dist_dir.parent))
        try:
            started = time.monotonic()
            log.info("fetching kafka jars", version=self.settings.kafka_version, dest=str(self.dist_dir))
            jars = self._run_maven(mvn, tmp)
            (tmp / _MARKER).write_text(f"kafka_{self.settings.scala_version} {self.settings.kafka_version}\n")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
            if self.dist_dir.exists():  # a dist without marker cannot be trusted
                shutil.rmtree(self.dist_dir)
            tmp.rename(self.dist_dir)
            log.info("fetched kafka jars", jars=jars, seconds=round(time.monotonic() - started, 1))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run_maven(self, mvn: str, workdir: Path) -> int:
        """Copy the packaged pom into ``workdir`` and let Maven resolve the jars into ``libs``."""
        pom = workdir / "pom.xml"
        pom.write_bytes(resources.files("k2.broker").joinpath("pom.xml").read_bytes())
        cmd = [
            mvn,
            "-B",
            "-ntp",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={workdir / 'libs'}",
            f"-Dkafka.version={self.settings.kafka_version}",
            f"-Dscala.version={self.settings.scala_version}",
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_MAVEN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"mvn did not finish within {_MAVEN_TIMEOUT_S:.0f}s fetching Kafka") from exc
        jars = len(list((workdir / "libs").glob("*.jar")))
        if done.returncode != 0 or jars == 0:
            raise BrokerError(
                f"mvn failed (exit {done.returncode}) fetching Kafka {self.settings.kafka_version}:\n"
                + _last_lines(done.stdout)
            )
        return jars

    # ----------------------------------------------------------------- start

    def start(self) -> BrokerStatus:
        """Start the broker unless it already runs, then make sure k2's topics exist."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_dir / "broker.lock"):
            pid = self._live_pid()
            if pid is None:
                pid = self._launch()
            else:
                log.info("broker already running", pid=pid, bootstrap=self.bootstrap)
            self._wait_ready(pid)
        ensure_k2_topics(
            self.bootstrap,
            self._kafka.topics,
            self._kafka.partitions,
            timeout=self.settings.start_timeout_s,
        )
        return self.status()

    def _launch(self) -> int:
        started = time.monotonic()
        libs = self.fetch()
        java = _find_java()
        self._refuse_taken_ports()
        props, log4j = self._write_config()
        self._format(java, libs, props, log4j)
        cmd = [
            java,
            f"-Xmx{self.settings.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            *self._jvm_logging(log4j),
            "-cp",
            str(libs / "*"),
            _MAIN_CLASS,
            str(props),
        ]
        with (self.state_dir / "broker.out").open("ab") as out:
            # A new session: the broker outlives this process and ignores the terminal's Ctrl-C.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid_file.write_text(f"{self._proc.pid}\n")
        log.info(
            "broker launched",
            pid=self._proc.pid,
            bootstrap=self.bootstrap,
            seconds=round(time.monotonic() - started, 1),
        )
        return self._proc.pid

    def _write_config(self) -> tuple[Path, Path]:
        props = self.state_dir / "server.properties"
        props.write_text(render_server_properties(self.settings, self._kafka))
        log4j = self.state_dir / "log4j2.yaml"
        log4j.write_bytes(resources.files("k2.broker").joinpath("log4j2.yaml").read_bytes())
        return props, log4j

    def _jvm_logging(self, log4j: Path, logs_dir: Path | None = None) -> list[str]:
        logs_dir = logs_dir or self.log_file.parent
        return [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={logs_dir}"]

    def _format(self, java: str, libs: Path, props: Path, log4j: Path) -> None:
        """Format the data dir once; a formatted dir keeps its cluster id across restarts."""
        if (self.state_dir / "data" / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        log.info("formatting broker storage", cluster_id=cluster_id, data=str(self.state_dir / "data"))
        cmd = [
            java,
            # Its own log dir, so a failed start's server.log tail shows the broker, not the format.
            *self._jvm_logging(log4j, self.log_file.parent / "format"),
            "-cp",
            str(libs / "*"),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(props),
        ]
        done = subprocess.run(
            cmd,
            cwd=self.state_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise BrokerError(f"formatting {self.state_dir / 'data'} failed:\n{_last_lines(done.stdout)}")

    def _refuse_taken_ports(self) -> None:
        """Fail with the culprit's pid rather than let the JVM die with a bind error in its log."""
        for port in (self.settings.port, self.settings.controller_port):
            if _port_open(self.settings.host, port):
                raise BrokerError(
                    f"port {self.settings.host}:{port} is already in use ({_listener(port)}), "
                    f"but not by the broker of {self.state_dir}"
                )

    def _wait_ready(self, pid: int) -> None:
        """Block until the broker serves metadata; on failure stop it and raise with its logs."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if self._broker_process(pid) is None:
                raise BrokerError(f"broker (pid {pid}) exited during start:\n{self._log_tail()}")
            if _port_open(self.settings.host, self.settings.port) and self._serves_metadata():
                return
            time.sleep(0.2)
        tail = self._log_tail()
        self.stop()
        raise BrokerError(
            f"broker (pid {pid}) not ready on {self.bootstrap} "
            f"within {self.settings.start_timeout_s}s:\n{tail}"
        )

    def _serves_metadata(self) -> bool:
        try:
            metadata = admin_client(self.bootstrap).list_topics(timeout=2)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    # ----------------------------------------------------------------- stop / status

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM for a clean shutdown (no log recovery on next start), SIGKILL after ``timeout``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_dir / "broker.lock"):
            pid = self._live_pid()
            if pid is not None:
                self._terminate(pid, timeout)
            self._pid_file.unlink(missing_ok=True)

    def _terminate(self, pid: int, timeout: float) -> None:
        log.info("stopping broker", pid=pid)
        try:
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except psutil.TimeoutExpired:
                log.warning("broker ignored SIGTERM, killing it", pid=pid, timeout_s=timeout)
                process.kill()
                process.wait(10)
        except psutil.NoSuchProcess:
            log.info("broker exited before it was signalled", pid=pid)
        self._reap(pid)

    def status(self) -> BrokerStatus:
        pid = self._live_pid()
        running = pid is not None and _port_open(self.settings.host, self.settings.port)
        topics: list[str] = []
        if running:
            try:
                topics = list_topics(self.bootstrap)
            except KafkaException as exc:
                log.warning("broker running but metadata unavailable", pid=pid, error=str(exc))
        return BrokerStatus(running=running, pid=pid, bootstrap=self.bootstrap, topics=topics)

    def wipe(self) -> None:
        """Stop the broker and delete its state dir (data, logs, pid); the jar cache stays."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("broker state wiped", state_dir=str(self.state_dir))

    # ----------------------------------------------------------------- process identity

    @property
    def _pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    def _live_pid(self) -> int | None:
        """The pid from the pid file if it is this state dir's broker and alive, else None."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._broker_process(pid) is not None else None

    def _broker_process(self, pid: int) -> psutil.Process | None:
        """The live process ``pid`` if its command line is this state dir's broker."""
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                self._reap(pid)
                return None
            cmdline = process.cmdline()
        except psutil.Error:
            return None
        ours = _MAIN_CLASS in cmdline and str(self.state_dir / "server.properties") in cmdline
        return process if ours else None

    def _reap(self, pid: int) -> None:
        """Collect the exit status if this process launched the broker, so it is not a zombie."""
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()

    def _log_tail(self) -> str:
        return "\n".join(
            f"--- {path} ---\n{_last_lines(path.read_text(errors='replace'))}"
            for path in (self.state_dir / "broker.out", self.log_file)
            if path.exists()
        )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_java() -> str:
    """``$JAVA_HOME/bin/java`` if set (the JDK convention every Java tool follows), else PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found (JAVA_HOME unset and no java on PATH); Kafka 4 needs Java 17+")
    return java


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _listener(port: int) -> str:
    """Who listens on ``port``, for an error message; best effort."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                process = psutil.Process(conn.pid)
                return f"pid {conn.pid}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error as exc:  # listing sockets may need privileges; the message still helps
        return f"owner unknown: {exc}"
    return "owner unknown"


def _last_lines(text: str, n: int = _TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-n:])
