"""The fleet as Kafka and Redis describe it, refreshed every ``dashboard.poll_s``.

- Kafka, read-only requests: the workers' group (AdminClient: members, who owns which input
  partition), its committed offsets (a consumer of that group id that never subscribes and
  never commits, so it never joins: ``AdminClient.list_consumer_group_offsets`` crashes the
  process in librdkafka 2.16 when the coordinator answers NOT_COORDINATOR, librdkafka #5040,
  seen here after a broker restart), the input topic's end offsets (lag per partition), and the
  dead-letter topic's end offsets (its rate, without reading a single dead letter).
- Redis (streamer.lifecycle.registry): the serving pointer and the model history.

Each refresh also says whether Kafka and Redis answered; the page shows "reconnecting" while
one does not. :class:`Rates` counts what the readers see, per second of arrival, for an hour.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import AdminClient, OffsetSpec

from schemas.settings import Settings
from streamer.lifecycle import registry
from streamer.logs import kafka_logger
from streamer.state.client import RedisClient

__all__ = ["Fleet", "FleetPoller", "Health", "Rates"]

log = logging.getLogger(__name__)


class Rates:
    """Per-second counts of score events, flagged events and alert transitions, by arrival
    time, over the last ``seconds`` (a ring of one slot per second)."""

    NAMES = ("records", "flagged", "alerts")

    def __init__(self, seconds: int = 3600, clock: Callable[[], float] = time.time) -> None:
        self._n = seconds
        self._clock = clock
        self._started = clock()
        self._stamp = np.full(seconds, -1, np.int64)
        self._counts = np.zeros((len(self.NAMES), seconds), np.float64)

    def add(self, *, records: int = 0, flagged: int = 0, alerts: int = 0) -> None:
        second = int(self._clock())
        slot = second % self._n
        if self._stamp[slot] != second:
            self._stamp[slot] = second
            self._counts[:, slot] = 0.0
        self._counts[:, slot] += (records, flagged, alerts)

    def per_second(self, window_s: int = 10) -> dict[str, float]:
        """Mean rates over the last ``window_s`` whole seconds (the current one is partial)."""
        now = int(self._clock())
        mask = (self._stamp >= now - window_s) & (self._stamp < now)
        sums = self._counts[:, mask].sum(axis=1) / window_s
        return {name: float(v) for name, v in zip(self.NAMES, sums, strict=True)}

    def series(self, step_s: int = 10) -> dict[str, list[float]]:
        """Rates per ``step_s`` over the last hour (since the dashboard started, but 10
        minutes at least), oldest first (the fleet chart); the last step is the current one,
        averaged over its seconds so far."""
        now = self._clock()
        end = int(now) // step_s * step_s + step_s  # the end of the current step
        since_start = (end - int(self._started)) // step_s + 1
        steps = min(self._n // step_s, max(since_start, 600 // step_s))  # 10 min at least
        t = np.arange(end - steps * step_s, end, step_s)
        ok = (self._stamp >= t[0]) & (self._stamp <= int(now))
        idx = (self._stamp[ok] - t[0]) // step_s
        out = np.zeros((len(self.NAMES), steps))
        for i in range(len(self.NAMES)):
            np.add.at(out[i], idx, self._counts[i, ok])
        seconds = np.full(steps, float(step_s))
        seconds[-1] = max(1.0, now - t[-1])
        rates = {name: (out[i] / seconds).tolist() for i, name in enumerate(self.NAMES)}
        return {"t": t.astype(float).tolist(), **rates}


@dataclass
class Health:
    """Whether Kafka and Redis answered the last time the dashboard asked, and since when."""

    kafka_ok: bool = True
    redis_ok: bool = True
    kafka_since: float = field(default_factory=time.time)
    redis_since: float = field(default_factory=time.time)
    kafka_error: str = ""
    redis_error: str = ""

    def kafka(self, ok: bool, error: str = "") -> None:
        if ok != self.kafka_ok:
            self.kafka_ok, self.kafka_since = ok, time.time()
            _log_change("Kafka", ok, error)
        self.kafka_error = error

    def redis(self, ok: bool, error: str = "") -> None:
        if ok != self.redis_ok:
            self.redis_ok, self.redis_since = ok, time.time()
            _log_change("Redis", ok, error)
        self.redis_error = error

    def view(self) -> dict[str, Any]:
        return {
            "kafka": {"ok": self.kafka_ok, "since": self.kafka_since, "error": self.kafka_error},
            "redis": {"ok": self.redis_ok, "since": self.redis_since, "error": self.redis_error},
        }


def _log_change(service: str, ok: bool, error: str) -> None:
    if ok:
        log.info(f"{service} answers the dashboard again")
    else:
        log.warning(f"{service} unreachable; the page says it is reconnecting",
                    extra={"error": error})  # fmt: skip


@dataclass
class Fleet:
    """The last refresh: partitions with lag and owner, DLQ rate, model, history."""

    partitions: list[dict[str, Any]] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)
    group_state: str = "unknown"
    dlq_per_s: float | None = None
    model: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    floor: float | None = None  # the serving bundle's calibrated threshold, if readable here
    refreshed_at: float | None = None


class FleetPoller:
    """Refreshes a :class:`Fleet` from Kafka and Redis (module docstring); one call per
    ``dashboard.poll_s`` from the dashboard's poll thread."""

    def __init__(self, settings: Settings, client: RedisClient, health: Health) -> None:
        self._settings = settings
        self._redis = client
        self._health = health
        self._admin, self._offsets = self._new_admin(), self._new_offsets()
        self._retired: list[AdminClient] = []
        self._answered = False  # the last metadata request was answered
        # DLQ end offsets per poll: the rate is averaged over the last minute of them
        self._dlq_ends: deque[tuple[float, int]] = deque(
            maxlen=max(2, int(60 / settings.dashboard.poll_s))
        )
        self._floors: dict[str, float | None] = {}
        self.fleet = Fleet()

    def _new_admin(self) -> AdminClient:
        config: dict[str, Any] = {
            **self._settings.kafka.client_config(),
            "error_cb": self._on_error,
            "logger": kafka_logger(),
        }
        return AdminClient(config)

    def _new_offsets(self) -> Consumer:
        """A consumer that only asks for the workers' committed offsets: no subscribe, no
        assign, no commit, so it never joins the group or moves anything."""
        return Consumer({
            **self._settings.kafka.client_config(),
            "group.id": self._settings.kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "logger": kafka_logger(),
        })  # fmt: skip

    def close(self) -> None:
        self._offsets.close()

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._health.kafka(False, err.str())

    def refresh(self) -> Fleet:
        """One refresh; what could not be read keeps its last value. Returns a new
        :class:`Fleet`, so a reader of the previous one never sees half an update."""
        fleet, timeout = replace(self.fleet), min(5.0, max(1.0, self._settings.dashboard.poll_s))
        try:
            self._kafka(fleet, timeout)
            self._health.kafka(True)
        except (KafkaException, KeyError, concurrent.futures.TimeoutError) as exc:
            self._health.kafka(False, str(exc) or "no answer within the request timeout")
            if self._answered:
                # The broker answers metadata but a group request timed out: seen after a
                # broker restart, when the client's group-coordinator requests stay wedged
                # for good. A fresh client asks afresh; the old one is kept a while, since
                # librdkafka may still deliver a late reply to it.
                self._retired = [*self._retired[-2:], self._admin]
                self._offsets.close()
                self._admin, self._offsets = self._new_admin(), self._new_offsets()
        try:
            self._redis_state(fleet)
            self._health.redis(True)
        except redis.RedisError as exc:
            self._health.redis(False, str(exc))
        fleet.refreshed_at = time.time()
        self.fleet = fleet
        return fleet

    def _kafka(self, fleet: Fleet, timeout: float) -> None:
        kafka = self._settings.kafka
        admin, group = self._admin, kafka.group_id
        self._answered = False
        topics = admin.list_topics(timeout=timeout).topics
        self._answered = True
        inputs = [TP(kafka.input_topic, p) for p in sorted(topics[kafka.input_topic].partitions)]
        dlq = [TP(kafka.dlq_topic, p) for p in sorted(topics[kafka.dlq_topic].partitions)]
        ends_f = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in (*inputs, *dlq)}, request_timeout=timeout
        )
        wait = timeout + 2.0  # futures are bounded too (see refresh)
        ends = {(tp.topic, tp.partition): f.result(wait).offset for tp, f in ends_f.items()}
        found = self._offsets.committed(inputs, timeout=timeout)
        committed = {tp.partition: tp.offset for tp in found}
        asked = admin.describe_consumer_groups([group], request_timeout=timeout)[group]
        described = asked.result(wait)
        owners: dict[int, dict[str, Any]] = {}
        members = []
        for m in described.members:
            owned = sorted(
                tp.partition
                for tp in (m.assignment.topic_partitions if m.assignment else [])
                if tp.topic == kafka.input_topic
            )
            member = {"client_id": m.client_id, "host": m.host, "member_id": m.member_id,
                      "partitions": owned}  # fmt: skip
            members.append(member)
            owners.update({p: member for p in owned})
        fleet.members = members
        fleet.group_state = str(getattr(described.state, "name", described.state)).lower()
        partitions = []
        for tp in inputs:
            end, done_at = ends[(tp.topic, tp.partition)], committed.get(tp.partition, -1001)
            owner = owners.get(tp.partition)
            partitions.append({
                "partition": tp.partition, "end": end,
                "committed": done_at if done_at >= 0 else None,
                "lag": end - done_at if done_at >= 0 else None,
                "owner": None if owner is None else f"{owner['client_id']} {owner['host']}",
            })  # fmt: skip
        fleet.partitions = partitions
        now, total = time.time(), sum(ends[(tp.topic, tp.partition)] for tp in dlq)
        self._dlq_ends.append((now, total))
        t0, n0 = self._dlq_ends[0]  # the oldest sample kept: about a minute of them
        if now - t0 >= 1.0:
            fleet.dlq_per_s = max(0.0, (total - n0) / (now - t0))

    def _redis_state(self, fleet: Fleet) -> None:
        prefix = self._settings.redis.key_prefix
        pointer = registry.current(self._redis, prefix)
        history = registry.history(self._redis, prefix)
        fleet.history = history
        if pointer is None:
            fleet.model, fleet.floor = None, None
            return
        since = next(
            (e for e in reversed(history)
             if e.get("version") == pointer.version
             and e.get("decision") in ("published", "rollback", "restored")),
            None,
        )  # fmt: skip
        fleet.model = {
            "version": pointer.version,
            "kind": pointer.kind,
            "input_shape": list(pointer.input_shape),
            "path": str(pointer.path),
            "published_at": since.get("at") if since else None,
            "decision": since.get("decision") if since else None,
        }
        if pointer.version not in self._floors:
            self._floors[pointer.version] = _floor(pointer)
        fleet.floor = self._floors[pointer.version]


def _floor(pointer: registry.Pointer) -> float | None:
    """The bundle's calibrated threshold (every key's threshold floor), if this host can read
    the bundle; the key view's Redis reading needs it.

    Read straight from the bundle's ``metadata.json`` (``calibration.threshold``, model/bundle.py)
    rather than through model.bundle, which would import torch: 600 MB of resident memory for
    one number. The dashboard only shows it, so the weights' checksum is not verified here.
    """
    try:
        metadata = orjson.loads((pointer.path / "metadata.json").read_bytes())
        return float(metadata["calibration"]["threshold"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.warning("cannot read the serving bundle's metadata", extra={"error": str(exc)})
        return None
