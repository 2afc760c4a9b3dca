"""Helpers for the retrain tests: a deployment (topics, Redis prefix, model store, settings), a
worker running in a thread, and readers of what it produced."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import orjson
import yaml
from confluent_kafka import Producer
from helpers import DIM, Topics, make_worker, read_topic, running
from helpers import make_settings as worker_settings

from model.detector import AMADetector
from model.testing import synthetic_normal
from schemas.settings import Settings
from streamer.devtools.replay import Replay, replay
from streamer.lifecycle import registry
from streamer.state.client import connect_from_settings
from streamer.worker.loop import Worker

KEYS = 4
SHIFT = 3.0  # added to the first 5 features: the worker flags about half of the shifted rows


def normal(n: int, seed: int) -> np.ndarray:
    return synthetic_normal(n, DIM, seed)


def shifted(n: int, seed: int, by: float = SHIFT) -> np.ndarray:
    """Normal behaviour after a level shift of a few sensors (a new operating point)."""
    rows = synthetic_normal(n, DIM, seed)
    rows[:, :5] += by
    return rows


@dataclass(frozen=True)
class Deployment:
    """One test's isolated deployment (topics, Redis prefix, model store) and what a test does
    with it: replay records and labels, run a worker, read score events and the history."""

    settings: Settings
    store: Path

    def retrain(self, **changes: object) -> Deployment:
        """The same deployment with some ``retrain`` settings changed (one test's variation)."""
        section = self.settings.retrain.model_copy(update=changes)
        return replace(self, settings=self.settings.model_copy(update={"retrain": section}))

    def send(self, rows: np.ndarray, seed: int = 0) -> Replay:
        """Replay ``rows`` into the input topic, keys round robin over KEYS keys."""
        keys = [f"machine-{i % KEYS}" for i in range(len(rows))]
        kafka = self.settings.kafka
        return replay({"bootstrap.servers": kafka.bootstrap}, kafka.input_topic, rows,
                      kind="vector", keys=keys, seed=seed)  # fmt: skip

    def send_labels(self, sent: Replay, rows: np.ndarray, is_anomaly: bool) -> None:
        """Feedback ``{key, ts, is_anomaly}`` for the given row indices of a replay."""
        topic = self.settings.retrain.labels_topic
        assert topic is not None
        producer = Producer({"bootstrap.servers": self.settings.kafka.bootstrap})
        for i in rows:
            label = {"key": sent.keys[i], "ts": float(sent.ts[i]), "is_anomaly": is_anomaly}
            producer.produce(topic, orjson.dumps(label))
        assert producer.flush(30) == 0

    def score_events(self, *, expect: int, timeout: float = 90.0) -> list[dict]:
        """Every score event, once at least ``expect`` arrived (then a short settle)."""
        kafka = self.settings.kafka
        messages = read_topic(
            kafka.bootstrap, kafka.scores_topic, expect=expect, timeout=timeout, settle=0.5
        )
        assert len(messages) >= expect, f"only {len(messages)} of {expect} score events arrived"
        return [orjson.loads(m.value()) for m in messages]

    def shift_window(self) -> None:
        """The window most cycles train on: 400 normal records, then 1200 after a level shift,
        all scored (call with a worker running)."""
        self.send(normal(400, seed=5), seed=1)
        self.send(shifted(1200, seed=6), seed=2)
        self.score_events(expect=1600)

    @contextmanager
    def worker(self, bundle: Path) -> Iterator[Worker]:
        """A production-wired worker in a thread (reload checked every 0.2 s)."""
        detector = AMADetector.load(bundle, device="cpu")
        with running(make_worker(self.settings, detector)) as worker:
            yield worker

    def history(self) -> list[dict]:
        """The model history after the deployment's own first publish of the champion."""
        client = connect_from_settings(self.settings)
        entries = registry.history(client, self.settings.redis.key_prefix)
        assert entries and entries[0]["trigger"] == {"reason": "manual"}, entries[:1]
        return entries[1:]

    def serving(self) -> str | None:
        """The version the registry's pointer names."""
        pointer = registry.current(
            connect_from_settings(self.settings), self.settings.redis.key_prefix
        )
        return pointer.version if pointer else None

    def write_config(self, path: Path) -> Path:
        """The settings as a YAML file for ``--config`` (the CLI reads the same nesting)."""
        path.write_text(yaml.safe_dump(self.settings.model_dump(mode="json")))
        return path


def make_settings(
    bootstrap: str,
    redis_url: str,
    prefix: str,
    topics: dict[str, str],
    store: Path,
    group: str,
    redis_options: dict[str, object] | None = None,
    **thresholds: object,
) -> Settings:
    """Worker and retrain settings for a test: tiny training, short windows and lock."""
    return worker_settings(
        bootstrap, group,
        Topics(topics["input"], topics["scores"], topics["alerts"], topics["dlq"]),
        redis_url=redis_url, prefix=prefix, redis_options=redis_options,
        sections={
            "thresholds": thresholds,
            "retrain": {
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
        },
    )  # fmt: skip


def alarm_rate(events: list[dict], sent: Replay, version: str | None = None) -> float:
    """Fraction of the replay's records flagged (by ``version``'s events, if given)."""
    ts = {round(float(t), 6) for t in sent.ts}
    mine = [e for e in events if round(e["ts"], 6) in ts]
    if version is not None:
        mine = [e for e in mine if e["model_version"] == version]
    assert mine, "no score events for this replay"
    return float(np.mean([e["is_anomaly"] for e in mine]))


def wait_for_version(worker: Worker, version: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while worker.model_version != version:
        assert time.monotonic() < deadline, f"worker still serves {worker.model_version}"
        time.sleep(0.1)


def cli(*args: str, wrapper: str = "") -> list[str]:
    """argv running the real CLI in a fresh interpreter, after ``wrapper`` code if given."""
    code = f"{wrapper}\nimport sys\nsys.argv = ['ama-stream', *{list(args)!r}]\n"
    code += "from streamer.cli import main\nmain()\n"
    return [sys.executable, "-c", code]
