"""Helpers for the retrain tests: a deployment (topics, Redis prefix, model store, settings), a
worker running in a thread, and readers of what it produced."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from worker_thread import running

from model.detector import AMADetector
from model.testing import synthetic_normal
from schemas.settings import Settings, load_settings
from streamer.metrics import WorkerMetrics
from streamer.reload import ModelSlot
from streamer.replay import Replay, replay
from streamer.state import ThresholdState, connect
from streamer.worker import Worker, WorkerOptions

DIM = 38
KEYS = 4
SHIFT = 5.0  # added to the first 5 features: the worker flags about half of the shifted rows


def normal(n: int, seed: int) -> np.ndarray:
    return synthetic_normal(n, DIM, seed)


def shifted(n: int, seed: int, by: float = SHIFT) -> np.ndarray:
    """Normal behaviour after a level shift of a few sensors (a new operating point)."""
    rows = synthetic_normal(n, DIM, seed)
    rows[:, :5] += by
    return rows


@dataclass(frozen=True)
class Deployment:
    """One test's isolated deployment: its topics, Redis prefix and model store."""

    settings: Settings
    store: Path

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap


def with_retrain(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some ``retrain`` fields changed (one test's variation of the job)."""
    return settings.model_copy(update={"retrain": settings.retrain.model_copy(update=changes)})


def make_settings(
    bootstrap: str,
    redis_url: str,
    prefix: str,
    topics: dict[str, str],
    store: Path,
    group: str,
    **thresholds: object,
) -> Settings:
    """Worker and retrain settings for a test: tiny training, short windows and lock."""
    return load_settings(
        kafka={
            "bootstrap": bootstrap,
            "group_id": group,
            "input_topic": topics["input"],
            "scores_topic": topics["scores"],
            "alerts_topic": topics["alerts"],
            "dlq_topic": topics["dlq"],
            "extra": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"},
        },
        redis={"url": redis_url, "key_prefix": prefix},
        batch={"max_records": 256, "max_wait_ms": 50},
        metrics={"port": 0},
        thresholds=thresholds,
        retrain={
            "store": store,
            "group_id": f"{group}.retrain",
            "labels_topic": topics["labels"],
            "window_s": 600,
            "max_records": 5000,
            "min_records": 200,
            "epochs": 8,
            "batch_size": 64,
            "time_budget_s": 30,
            "lock_ttl_s": 60,
        },
    )


def send(settings: Settings, rows: np.ndarray, seed: int = 0) -> Replay:
    """Replay ``rows`` into the input topic, keys round robin over KEYS keys."""
    keys = [f"machine-{i % KEYS}" for i in range(len(rows))]
    return replay(
        {"bootstrap.servers": settings.kafka.bootstrap}, settings.kafka.input_topic, rows,
        kind="vector",
        keys=keys, seed=seed,
    )  # fmt: skip


def send_labels(settings: Settings, sent: Replay, rows: np.ndarray, is_anomaly: bool) -> None:
    """Feedback ``{key, ts, is_anomaly}`` for the given row indices of a replay."""
    assert settings.retrain.labels_topic is not None
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for i in rows:
        label = {"key": sent.keys[i], "ts": float(sent.ts[i]), "is_anomaly": is_anomaly}
        producer.produce(settings.retrain.labels_topic, orjson.dumps(label))
    assert producer.flush(30) == 0


def score_events(settings: Settings, *, expect: int, timeout: float = 90.0) -> list[dict]:
    """Every score event, once at least ``expect`` arrived (then a short settle)."""
    topic = settings.kafka.scores_topic
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": "reader",
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out.extend(orjson.loads(m.value()) for m in consumer.consume(1000, timeout=0.2)
                       if m.error() is None)  # fmt: skip
            if len(out) >= expect:
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        consumer.close()
    assert len(out) >= expect, f"only {len(out)} of {expect} score events arrived"
    return out


def alarm_rate(events: list[dict], sent: Replay, version: str | None = None) -> float:
    """Fraction of the replay's records flagged (by ``version``'s events, if given)."""
    ts = {round(float(t), 6) for t in sent.ts}
    mine = [e for e in events if round(e["ts"], 6) in ts]
    if version is not None:
        mine = [e for e in mine if e["model_version"] == version]
    assert mine, "no score events for this replay"
    return float(np.mean([e["is_anomaly"] for e in mine]))


@contextmanager
def running_worker(settings: Settings, bundle: Path) -> Iterator[ModelSlot]:
    """A production-wired worker in a thread (reload checked every 0.2 s); yields its slot."""
    client = connect(settings.redis.url)
    slot = ModelSlot(
        AMADetector.load(bundle, device="cpu"), client=client,
        prefix=settings.redis.key_prefix, device="cpu", check_every_s=0.2,
    )  # fmt: skip
    worker = Worker(
        settings, model=slot, verdicts=ThresholdState.from_settings(settings, client=client),
        metrics=WorkerMetrics(), options=WorkerOptions(revoke_budget_s=5.0, drain_budget_s=10.0),
    )  # fmt: skip
    with running(worker):
        yield slot


def wait_for_version(slot: ModelSlot, version: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while slot.detector.model_version != version:
        assert time.monotonic() < deadline, f"worker still serves {slot.detector.model_version}"
        time.sleep(0.1)


def write_config(settings: Settings, path: Path) -> Path:
    """The settings as a YAML file for ``--config`` (the CLI reads the same nesting)."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path


def cli(*args: str, wrapper: str = "") -> list[str]:
    """argv running the real CLI in a fresh interpreter, after ``wrapper`` code if given."""
    code = f"{wrapper}\nimport sys\nsys.argv = ['ama-stream', *{list(args)!r}]\n"
    code += "from streamer.cli import main\nmain()\n"
    return [sys.executable, "-c", code]
