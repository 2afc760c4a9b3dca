"""Reading the scores and alerts topics for the dashboard, never as a member of anyone's group.

Each topic has its own reader thread and consumer, so a backlog of score events can never hold
an alert back (the page shows a new alert within 2 s of it reaching the topic: fetches wait at
most 100 ms, the reader polls every 100 ms, the page is told at once). A reader:

- uses ``dashboard.group_id`` only as a name: it takes partitions with ``assign()`` (no group
  membership, no rebalances, several dashboards each see everything) and never commits
  (``enable.auto.commit=false``, no ``commit`` call), so it cannot move anyone's offsets;
- starts at ``offsets_for_times(now - backfill)``: the last ``dashboard.backfill_s`` of score
  events and ``dashboard.alerts_backfill_s`` of alerts, so a restarted dashboard is not blank;
- rides out a broker restart: librdkafka reconnects and resumes from the position it held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.settings import Settings
from streamer.dashboard.alerts import parse_alert
from streamer.dashboard.series import ScoreBatch
from streamer.logs import kafka_logger

__all__ = ["TopicReader", "parse_alerts", "parse_scores"]

log = logging.getLogger(__name__)

Flagged = tuple[str, float, float, tuple[int, ...]]


def parse_scores(values: list[bytes]) -> tuple[ScoreBatch, list[Flagged], int]:
    """Score events -> columns, the flagged ones with their top features, and how many values
    were not score events (skipped: the page must not die on one bad message)."""
    keys: list[str] = []
    ts: list[float] = []
    score: list[float] = []
    threshold: list[float] = []
    flags: list[bool] = []
    flagged: list[Flagged] = []
    bad = 0
    for raw in values:
        try:
            e = orjson.loads(raw)
            row = (str(e["key"]), float(e["ts"]), float(e["score"]), float(e["threshold"]))
            anomalous = bool(e["is_anomaly"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        keys.append(row[0])
        ts.append(row[1])
        score.append(row[2])
        threshold.append(row[3])
        flags.append(anomalous)
        if anomalous:
            features = tuple(int(f) for f in e.get("top_features") or ())
            flagged.append((row[0], row[1], row[2], features))
    batch = ScoreBatch(
        keys=keys,
        ts=np.array(ts, np.float64),
        score=np.array(score, np.float64),
        threshold=np.array(threshold, np.float64),
        anomalous=np.array(flags, bool),
    )
    return batch, flagged, bad


def parse_alerts(values: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Alert messages -> the fields the page shows; and how many were not alerts."""
    out, bad = [], 0
    for raw in values:
        try:
            alert = parse_alert(orjson.loads(raw))
        except orjson.JSONDecodeError:
            alert = None
        if alert is None:
            bad += 1
        else:
            out.append(alert)
    return out, bad


class TopicReader:
    """One thread reading one topic from ``now - backfill_s`` on, handing each batch of values
    to ``handle`` (module docstring). ``on_error`` hears librdkafka's client-level errors."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        *,
        backfill_s: float,
        handle: Callable[[list[bytes]], None],
        on_error: Callable[[KafkaError], None],
        max_messages: int = 5000,
    ) -> None:
        self._topic = topic
        self._backfill_s = backfill_s
        self._handle = handle
        self._max = max_messages
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": settings.dashboard.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 100,  # the alert latency budget is 2 s end to end
                # librdkafka's read-ahead is part of the dashboard's memory: 64 MB by default
                # per consumer; 16 MB is over a second of score events at 40k records/s.
                "queued.max.messages.kbytes": 16_384,
                "error_cb": on_error,
                "logger": kafka_logger(),
            }
        )
        self._thread = threading.Thread(target=self._run, name=f"dash-{topic}", daemon=True)
        self.messages = 0
        self.last_message_at: float | None = None

    def start(self, timeout_s: float = 10.0) -> TopicReader:
        """Assign every partition at its backfill start (raises KafkaException if the broker
        cannot say where that is), then read in the background."""
        metadata = self._consumer.list_topics(self._topic, timeout=timeout_s)
        partitions = sorted(metadata.topics[self._topic].partitions)
        start_ms = int((time.time() - self._backfill_s) * 1000)
        wanted = [TopicPartition(self._topic, p, start_ms) for p in partitions]
        found = self._consumer.offsets_for_times(wanted, timeout=timeout_s)
        self._consumer.assign(
            [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
             for tp in found]
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(self._max, timeout=0.1)
            except KafkaException as exc:  # fatal client errors only; outages are waited out
                log.error("reader failed", extra={"topic": self._topic, "error": str(exc)})
                time.sleep(1.0)
                continue
            values = [m.value() or b"" for m in messages if m.error() is None]
            if not values:
                continue
            self.messages += len(values)
            self.last_message_at = time.time()
            try:
                self._handle(values)
            except Exception:  # a bug in a view must not stop the page's data
                log.exception("dashboard could not apply a batch", extra={"topic": self._topic})
