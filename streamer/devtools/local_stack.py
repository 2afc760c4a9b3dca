"""A real single-node Apache Kafka broker (KRaft) and a Redis server for development and CI.

Both run as child processes in their own sessions, bound to 127.0.0.1, with data, logs and PID
files under one state directory. `down` stops only what a PID file names *and* whose command
line still matches what `up` started, so a recycled PID never takes an unrelated process down.
The broker's jars come from Maven Central through the Maven pom in ``kafka/`` beside this module
(package data, so an installed wheel needs no source tree); the settings chosen for fast tests
are explained in docs/local-stack.md.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import AmaStreamError

KAFKA_FILES = Path(__file__).resolve().parent / "kafka"
KAFKA_POM = KAFKA_FILES / "pom.xml"
KAFKA_LOG4J = KAFKA_FILES / "log4j2.yaml"

# A cold JVM plus KRaft's first leader election takes 5-15 s on 2 cores; 90 s leaves room for a
# busy CI machine without hiding a broker that will never come up.
READY_TIMEOUT_S = 90.0
# Kafka flushes and closes its logs on SIGTERM; give it time before SIGKILL so the next `up`
# does not have to recover segments.
STOP_TIMEOUT_S = 30.0


class LocalStackError(AmaStreamError):
    """The local broker or Redis could not be set up, started or stopped."""


def default_state_dir() -> Path:
    """`$AMA_STATE_DIR`, else a folder under the user's cache directory."""
    env = os.environ.get("AMA_STATE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ama-stream" / "local"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `local status` says about one service."""

    name: str
    pid: int | None
    ready: bool
    address: str

    def describe(self) -> str:
        state = "ready" if self.ready else ("started, not answering" if self.pid else "stopped")
        pid = f" pid={self.pid}" if self.pid else ""
        return f"{self.name:<6} {state:<22} {self.address}{pid}"


@dataclass(frozen=True, slots=True)
class LocalStack:
    """The local Kafka + Redis pair rooted at one state directory."""

    state_dir: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    # -- public verbs ---------------------------------------------------------------------------

    def up(self) -> list[str]:
        """Start whatever is not running yet and wait until both services answer; returns the
        names of the services this call started (so a caller can stop just those)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        started = []
        if self._running_pid("redis") is None:
            self._start_redis()
            started.append("redis")
        if self._running_pid("kafka") is None:
            self._start_kafka()
            started.append("kafka")
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name, probe in (("redis", self._redis_ready), ("kafka", self._kafka_ready)):
            while not probe():
                if self._running_pid(name) is None:
                    raise LocalStackError(f"{name} exited during start-up{self._log_tail(name)}")
                if time.monotonic() > deadline:
                    raise LocalStackError(
                        f"{name} did not answer within {READY_TIMEOUT_S:.0f} s"
                        f"{self._log_tail(name)}"
                    )
                time.sleep(0.5)
        return started

    def status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus("kafka", self._running_pid("kafka"), self._kafka_ready(), self.bootstrap),
            ServiceStatus("redis", self._running_pid("redis"), self._redis_ready(), self.redis_url),
        ]

    def down(self, services: Sequence[str] = ("kafka", "redis")) -> list[str]:
        """Stop ``services`` (default both); return one line per service saying what was done."""
        return [self._stop(name) for name in ("kafka", "redis") if name in services]

    # -- Redis ----------------------------------------------------------------------------------

    def _start_redis(self) -> None:
        binary = _redis_binary()
        data = self.state_dir / "redis"
        data.mkdir(exist_ok=True)
        self._check_port_free(self.redis_port, "redis")
        # Persistence on (an append-only file, fsync every second): the model pointer, the model
        # history and open alert episodes must survive a Redis restart, as they would in any
        # deployment. No RDB snapshots on top: the append-only file is enough.
        argv = [
            binary,
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ]
        self._spawn("redis", argv)

    def _redis_ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    # -- Kafka ----------------------------------------------------------------------------------

    def _start_kafka(self) -> None:
        java = shutil.which("java")
        if java is None:
            raise LocalStackError("java not found: the local broker needs a Java 17+ runtime")
        self._check_port_free(self.kafka_port, "kafka")
        self._check_port_free(self.controller_port, "kafka controller")
        classpath = self._kafka_classpath()
        config = self._write_kafka_config()
        logs = self.state_dir / "kafka-data"
        if not (logs / "meta.properties").exists():
            cluster_id = _cluster_id()
            result = subprocess.run(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(config),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise LocalStackError(f"formatting the KRaft log failed:\n{result.stderr}")
        argv = [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            f"-Dkafka.logs.dir={self.state_dir / 'kafka-logs'}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        self._spawn("kafka", argv)

    def _kafka_classpath(self) -> str:
        """Resolve the broker's jars once per pom version; Maven caches them in ~/.m2."""
        pom = KAFKA_POM.read_bytes()
        pom_hash = hashlib.sha256(pom).hexdigest()[:12]
        cached = self.state_dir / f"kafka-classpath-{pom_hash}.txt"
        if cached.exists():
            classpath = cached.read_text().strip()
            if all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
                return classpath
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalStackError("mvn not found: Maven resolves the broker's jars")
        # Maven runs on a copy in the state directory: the installed package may be read-only.
        work_pom = self.state_dir / "kafka-pom.xml"
        work_pom.write_bytes(pom)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work_pom),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={cached}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not cached.exists():
            raise LocalStackError(
                f"resolving the Kafka jars failed:\n{result.stdout}{result.stderr}"
            )
        return cached.read_text().strip()

    def _write_kafka_config(self) -> Path:
        template = (KAFKA_FILES / "server.properties").read_text()
        config = self.state_dir / "server.properties"
        config.write_text(
            template.format(
                kafka_port=self.kafka_port,
                controller_port=self.controller_port,
                log_dirs=self.state_dir / "kafka-data",
            )
        )
        return config

    def _kafka_ready(self) -> bool:
        """Ready means the broker answers a metadata request, not merely that the port is open."""
        if not self._port_open(self.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient(
                {"bootstrap.servers": self.bootstrap, "log_level": "0"}
            ).list_topics(timeout=2)
        except Exception:  # the client raises KafkaException and friends while electing
            return False
        return bool(metadata.brokers)

    # -- processes ------------------------------------------------------------------------------

    def _pid_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.pid"

    def _log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.out"

    def _log_tail(self, name: str, lines: int = 15) -> str:
        """The end of a service's log, so a failed start explains itself (in CI, too)."""
        path = self._log_path(name)
        try:
            tail = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"; no log at {path}"
        return f"; last lines of {path}:\n" + "\n".join(tail)

    def _spawn(self, name: str, argv: list[str]) -> None:
        with self._log_path(name).open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_path(name).write_text(f"{process.pid}\n{_marker(name, self)}\n")
        # For its first milliseconds the child has not exec'd yet and /proc shows an empty
        # command line, which _running_pid would read as "not ours" (so `up` reported a
        # starting broker as exited, and `down` then left it running). Wait for the exec.
        deadline = time.monotonic() + 5.0
        while process.poll() is None and time.monotonic() < deadline:
            if self._running_pid(name) is not None:
                break
            time.sleep(0.005)

    def _running_pid(self, name: str) -> int | None:
        """The PID from our PID file if that process is alive and is still the one we started."""
        path = self._pid_path(name)
        if not path.exists():
            return None
        lines = path.read_text().split("\n")
        pid, marker = int(lines[0]), lines[1] if len(lines) > 1 else ""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        if marker not in cmdline or stat.split(") ", 1)[1].startswith("Z"):
            return None
        return pid

    def _stop(self, name: str) -> str:
        pid = self._running_pid(name)
        if pid is None:
            self._pid_path(name).unlink(missing_ok=True)
            return f"{name}: not running"
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._running_pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._running_pid(name) is not None:
            os.killpg(pid, signal.SIGKILL)
            while self._running_pid(name) is not None:
                time.sleep(0.1)
        self._pid_path(name).unlink(missing_ok=True)
        return f"{name}: stopped (pid {pid})"

    def _check_port_free(self, port: int, what: str) -> None:
        if self._port_open(port):
            raise LocalStackError(
                f"port {port} for {what} is taken by a process this stack did not start; "
                f"stop it or choose another port"
            )

    @staticmethod
    def _port_open(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False


def _cluster_id() -> str:
    """A random KRaft cluster id (22 url-safe base64 characters). Kafka's own generator skips
    ids that start with '-' because its command line would read them as an option; so do we."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _marker(name: str, stack: LocalStack) -> str:
    """A piece of the command line that identifies the process we started.

    redis-server rewrites its process title once it listens ("redis-server 127.0.0.1:6379"), so
    only its program name is in the command line both before and after that moment.
    """
    if name == "redis":
        return "redis-server"
    return str(stack.state_dir / "server.properties")


def _redis_binary() -> str:
    """Find redis-server, installing Debian's package when we are root and it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise LocalStackError(
            "redis-server not found. Install it (Debian/Ubuntu: `sudo apt-get install "
            "redis-server`, macOS: `brew install redis`) or point AMA_REDIS__URL at a Redis server."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise LocalStackError(f"`{' '.join(argv)}` failed:\n{result.stderr}")
    found = shutil.which("redis-server")
    if found is None:
        raise LocalStackError("apt-get installed redis-server but it is not on PATH")
    return found
