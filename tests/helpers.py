"""Helpers every integration suite shares: producing and reading topics, committed offsets,
free ports, a private redis-server, test settings, and a production-wired worker in a thread.

Suite-specific helpers live beside their suites (worker/worker_support.py,
lifecycle/retrain_support.py) and build on these.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from model.detector import AMADetector
from schemas.settings import Settings, load_settings
from streamer.lifecycle.reload import ModelSlot
from streamer.state.client import connect_from_settings
from streamer.state.verdicts import ThresholdState
from streamer.worker.config import WorkerOptions
from streamer.worker.loop import Worker
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.pipeline import VerdictSource

DIM = 38  # the dimension of the test bundles and records


@dataclass(frozen=True)
class Topics:
    input: str
    scores: str
    alerts: str
    dlq: str


def make_settings(
    bootstrap: str,
    group: str,
    topics: Topics,
    *,
    redis_url: str = "",
    prefix: str = "ama",
    redis_options: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
    sections: dict[str, Any] | None = None,
    **batch: Any,
) -> Settings:
    """Settings for a test worker: a 6 s session timeout (the broker's minimum) so a killed
    member leaves the group quickly; ``sections`` adds whole settings sections (retrain, ...),
    ``redis_options`` more fields of the redis section (cluster, ...)."""
    return load_settings(
        kafka={
            "bootstrap": bootstrap,
            "group_id": group,
            "input_topic": topics.input,
            "scores_topic": topics.scores,
            "alerts_topic": topics.alerts,
            "dlq_topic": topics.dlq,
            "extra": {
                "session.timeout.ms": "6000",
                "heartbeat.interval.ms": "500",
                **(extra or {}),
            },
        },
        redis={
            "url": redis_url or "redis://127.0.0.1:6379/0",
            "key_prefix": prefix,
            **(redis_options or {}),
        },
        batch={"max_records": 256, "max_wait_ms": 50, **batch},
        metrics={"port": 0},
        **(sections or {}),
    )


def make_worker(
    settings: Settings,
    detector: AMADetector,
    verdicts: VerdictSource | None = None,
    *,
    options: WorkerOptions | None = None,
) -> Worker:
    """A worker wired like production (Redis thresholds and hot reload from ``settings.redis``,
    the pointer checked every 0.2 s) unless ``verdicts`` replaces the Redis state."""
    client = connect_from_settings(settings)
    slot = ModelSlot(
        detector, client=client, prefix=settings.redis.key_prefix, device="cpu", check_every_s=0.2
    )
    return Worker(
        settings,
        model=slot,
        verdicts=verdicts or ThresholdState.from_settings(settings, client=client),
        metrics=WorkerMetrics(),
        options=options or WorkerOptions(revoke_budget_s=5.0, drain_budget_s=10.0),
    )


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread; stop and join it on exit (re-raising its exception), so a
    worker that crashed fails the test that started it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
    if errors:
        raise errors[0]


def produce(bootstrap: str, topic: str, items: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Produce (key, value) pairs and wait for every acknowledgement."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in items:
        producer.produce(topic, value=value, key=key)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 60.0, settle: float = 1.0
) -> list[Message]:
    """Read a topic from the beginning until ``expect`` messages arrived (then ``settle`` more
    seconds to catch extras such as duplicates), or until ``timeout``."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.2):
                if m.error() is None:
                    out.append(m)
            if len(out) >= expect:
                deadline = min(deadline, time.monotonic() + settle)
    finally:
        consumer.close()
    return out


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (-1001 = none)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """How many records the group has committed past, over all partitions."""
    return sum(max(0, offset) for offset in committed(bootstrap, group, topic).values())


def counter_total(counter: Any) -> float:
    """Sum of a prometheus counter over all its label values."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def free_ports(n: int) -> list[int]:
    """``n`` free ports below the kernel's ephemeral range (32768+ here): a port picked by
    binding to 0 is ephemeral, and on a busy machine an outgoing connection can take it
    before the broker binds it (seen as "Address already in use")."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


class PrivateRedis:
    """A redis-server of this test's own, on a free port, so stopping it cannot disturb anyone
    else. ``password`` makes it require one."""

    def __init__(self, port: int, password: str | None = None) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._password = password
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (ama-stream local up installs it)"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]  # fmt: skip
        if self._password:
            argv += ["--requirepass", self._password]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, password=self._password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.02)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)  # a hung server must wake to hear SIGTERM
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def hang(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as in a
        long GC pause or a stuck host. Its data survives."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def wake(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)


class PrivateRedisCluster:
    """A Redis Cluster of this test's own: ``masters`` masters, each with ``replicas`` replicas,
    on free ports, made with ``redis-cli --cluster create`` (slots split evenly), torn down by
    :meth:`stop`. ``cluster-node-timeout`` is 1 s so that a killed master fails over in a few
    seconds instead of the default 15."""

    NODE_TIMEOUT_MS = 1000

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 0) -> None:
        self.ports = _cluster_ports(masters * (1 + replicas))
        self._dir = directory
        self._replicas = replicas
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        """Start the nodes and make them one cluster; on any failure stop what started."""
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not on PATH"
        try:
            for port in self.ports:
                self._launch(port)
            for port in self.ports:
                _wait_ping(port)
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self._replicas),
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def _launch(self, port: int) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH"
        node = self._dir / str(port)
        node.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS), "--save", "",
                "--appendonly", "no", "--repl-diskless-sync-delay", "0"]  # fmt: skip
        self._procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and sees every replica in sync."""
        deadline = time.monotonic() + timeout
        while True:
            if all(self._state_ok(port) for port in self._procs):
                return
            assert time.monotonic() < deadline, "the Redis Cluster did not become ok"
            time.sleep(0.1)

    def _state_ok(self, port: int) -> bool:
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            if client.cluster("INFO")["cluster_state"] != "ok":
                return False
            replication = client.info("replication")
            if replication["role"] == "master":
                return int(replication["connected_slaves"]) == self._replicas
            return replication.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            client.close()

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now (as a live node sees it)."""
        client = redis.Redis(port=next(iter(self._procs)))
        slot = int(client.cluster("KEYSLOT", key))
        for start, end, master, *_replicas in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crashed host: no goodbye to its peers or clients."""
        proc = self._procs.pop(port)
        proc.kill()
        proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again, as Kubernetes would: with its nodes.conf it rejoins the
        cluster, as a replica of the master that replaced it, and copies its data."""
        self._launch(port)
        _wait_ping(port)

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.terminate()
        for proc in self._procs.values():
            proc.wait(10)
        self._procs.clear()


def _cluster_ports(n: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too, all below the kernel's
    ephemeral range (see :func:`free_ports`)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_ports(1)[0] % 10_000 + 12_000
        if port in ports or not all(_free(p) for p in (port, port + 10_000)):
            continue
        ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_ping(port: int, timeout: float = 10.0) -> None:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            assert time.monotonic() < deadline, f"redis-server on {port} did not start"
            time.sleep(0.02)
