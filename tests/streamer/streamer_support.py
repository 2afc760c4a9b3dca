"""Helpers for the worker tests: records, a verdict source without Redis, topic readers, free
ports and a private redis-server."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from model.detector import AMADetector
from model.testing import synthetic_normal
from schemas.events import Alert
from schemas.settings import Settings, load_settings
from streamer.metrics import WorkerMetrics
from streamer.pipeline import VerdictSource
from streamer.reload import ModelSlot
from streamer.state import ThresholdState, connect
from streamer.worker import Worker, WorkerOptions

DIM = 38


@dataclass(frozen=True)
class StaticVerdicts:
    thresholds: np.ndarray
    is_anomaly: np.ndarray
    alerts: list[Alert]
    degraded: bool


class FloorVerdicts:
    """A verdict source without Redis: the bundle's threshold, no alerts. For pipeline logic."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        keys: Sequence[str],
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> StaticVerdicts:
        self.calls += 1
        thresholds = np.full(len(keys), floor)
        return StaticVerdicts(thresholds, scores > thresholds, [], False)


def sensor_value(key: str, ts: float, values: np.ndarray) -> bytes:
    return orjson.dumps({"key": key, "ts": ts, "values": values.tolist()})


def normal_values(n: int, seed: int = 0) -> np.ndarray:
    return synthetic_normal(n, DIM, seed)


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
    extra: dict[str, str] | None = None,
    **batch: Any,
) -> Settings:
    """Settings for a test worker: a 6 s session timeout (the broker's minimum) so a killed
    member leaves the group quickly."""
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
        redis={"url": redis_url or "redis://127.0.0.1:6379/0", "key_prefix": prefix},
        batch={"max_records": 256, "max_wait_ms": 50, **batch},
        metrics={"port": 0},
    )


def make_worker(
    settings: Settings,
    detector: AMADetector,
    verdicts: VerdictSource | None = None,
    *,
    options: WorkerOptions | None = None,
) -> Worker:
    """A worker wired like production (Redis thresholds and hot reload from ``settings.redis``)
    unless ``verdicts`` replaces the Redis state."""
    client = connect(settings.redis.url)
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
    else."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (ama-stream local up installs it)"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
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
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
