"""Redis outage mid-stream, and hot reload of the model through the Redis pointer."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from helpers import (
    DIM,
    PrivateRedis,
    Topics,
    committed_total,
    counter_total,
    make_settings,
    make_worker,
    produce,
    read_topic,
    running,
)
from worker_support import normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import Alert, ScoreEvent
from streamer.lifecycle.registry import Pointer, pointer_key, publish_manual

pytestmark = pytest.mark.integration


def scored(kafka_bootstrap: str, topic: str, expect: int) -> list[ScoreEvent]:
    messages = read_topic(kafka_bootstrap, topic, expect=expect)
    return [ScoreEvent.model_validate_json(m.value()) for m in messages]


def test_redis_outage_loses_nothing_and_flags_events_degraded_meanwhile(
    kafka_bootstrap: str,
    private_redis: PrivateRedis,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    settings = make_settings(
        kafka_bootstrap, group_factory(), topics, redis_url=private_redis.url, prefix="ama"
    )
    rows = normal_values(3000, seed=13)
    items = [
        (f"m{i % 8}".encode(), sensor_value(f"m{i % 8}", float(i), r)) for i, r in enumerate(rows)
    ]

    def feed(part: list[tuple[bytes, bytes]]) -> None:
        for start in range(0, len(part), 100):
            produce(kafka_bootstrap, topics.input, part[start : start + 100])
            time.sleep(0.1)

    worker = make_worker(settings, detector)
    with running(worker):
        feeder = threading.Thread(target=feed, args=(items[:2500],))
        feeder.start()
        time.sleep(0.8)
        private_redis.stop()
        time.sleep(1.5)
        private_redis.start()
        feeder.join()
        time.sleep(2.0)  # the state's reconnect backoff (<= 1.6 s here) has elapsed
        feed(items[2500:])
        events = scored(kafka_bootstrap, topics.scores, expect=len(items))

    per_offset = Counter((e.source.partition, e.source.offset) for e in events)
    assert len(per_offset) == len(items) and set(per_offset.values()) == {1}
    degraded = [e for e in events if e.degraded]
    assert degraded, "no event was flagged degraded while Redis was down"
    tail = {(e.source.partition, e.source.offset) for e in events if e.ts >= 2500}
    assert not [e for e in events if e.degraded and (e.source.partition, e.source.offset) in tail]
    print(f"{len(degraded)} of {len(events)} events degraded during the outage")


def test_hot_reload_switches_model_version_and_refuses_a_corrupt_bundle(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
    other_bundle: Path,
    tmp_path: Path,
) -> None:
    client = redis.Redis.from_url(redis_url)
    settings = make_settings(
        kafka_bootstrap, group_factory(), topics, redis_url=redis_url, prefix=redis_prefix
    )
    rows = normal_values(300, seed=17)
    batch = [
        [(b"k", sensor_value("k", float(i + 100 * j), rows[i + 100 * j])) for i in range(100)]
        for j in range(3)
    ]
    worker = make_worker(settings, detector)
    old = detector.model_version
    with running(worker):
        produce(kafka_bootstrap, topics.input, batch[0])
        assert {e.model_version for e in scored(kafka_bootstrap, topics.scores, 100)} == {old}

        new = publish_manual(client, redis_prefix, other_bundle)["version"]
        assert new != old
        deadline = time.monotonic() + 20
        while worker.metrics.model_info.labels(new)._value.get() != 1:
            assert time.monotonic() < deadline, "the worker did not swap models"
            time.sleep(0.1)
        produce(kafka_bootstrap, topics.input, batch[1])
        events = scored(kafka_bootstrap, topics.scores, 200)
        assert {e.model_version for e in events if e.ts >= 100} == {new}

        corrupt = tmp_path / "corrupt"
        shutil.copytree(other_bundle, corrupt)
        weights = corrupt / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64] + b"\0" * 64)
        # Written past the registry's checks, as a broken disk or a bad copy would leave it.
        client.set(
            pointer_key(redis_prefix), Pointer(corrupt, "corrupt-1", "vector", (DIM,)).dumps()
        )
        deadline = time.monotonic() + 20
        while worker.metrics.model_reloads.labels("refused")._value.get() < 1:
            assert time.monotonic() < deadline, "the corrupt bundle was not refused"
            time.sleep(0.1)
        produce(kafka_bootstrap, topics.input, batch[2])
        events = scored(kafka_bootstrap, topics.scores, 300)
        assert {e.model_version for e in events if e.ts >= 200} == {new}


def _alerts(bootstrap: str, topic: str, expect: int) -> set[tuple[str, str, float, int]]:
    messages = read_topic(bootstrap, topic, expect=expect, timeout=60, settle=2.0)
    out = set()
    for m in messages:
        a = Alert.model_validate_json(m.value())
        out.add((a.key, a.status, a.starts_at, a.n_anomalous))
    return out


def test_an_incident_during_a_redis_outage_fires_when_redis_is_back(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    private_redis: PrivateRedis,
    topic_factory: Callable[..., str],
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    """Redis hangs while an incident begins: score events go out degraded, nothing is
    committed past the outage, and when Redis answers again the held records are applied and
    the alert fires, the same episode as in a run without the outage."""
    keys = ["dev", "m0", "m1"]
    rows = {key: normal_values(340, seed=30 + i) for i, key in enumerate(keys)}
    rows["dev"][260:266] = 8.0  # the incident: six obviously anomalous records
    phases = [range(0, 250), range(250, 310), range(310, 340)]  # Redis is out during the second

    def records(phase: range) -> list[tuple[bytes | None, bytes | None]]:
        return [
            (key.encode(), sensor_value(key, 1.7e9 + i, rows[key][i]))
            for i in phase
            for key in keys
        ]

    def topics_() -> Topics:
        return Topics(topic_factory("in", partitions=2), topic_factory("scores"),
                      topic_factory("alerts"), topic_factory("dlq"))  # fmt: skip

    # The reference: the same records, Redis up throughout.
    ref = topics_()
    with running(make_worker(make_settings(
        kafka_bootstrap, group_factory(), ref, redis_url=redis_url, prefix=redis_prefix
    ), detector)):  # fmt: skip
        for phase in phases:
            produce(kafka_bootstrap, ref.input, records(phase))
        read_topic(kafka_bootstrap, ref.scores, expect=340 * 3, settle=0.0)
        expected = _alerts(kafka_bootstrap, ref.alerts, expect=2)
    assert {(k, s) for k, s, _, _ in expected} == {("dev", "firing"), ("dev", "resolved")}

    topics = topics_()
    group = group_factory()
    settings = make_settings(kafka_bootstrap, group, topics, redis_url=private_redis.url)
    worker = make_worker(settings, detector)
    with running(worker):
        produce(kafka_bootstrap, topics.input, records(phases[0]))
        read_topic(kafka_bootstrap, topics.scores, expect=250 * 3, settle=0.0)
        before = committed_total(kafka_bootstrap, group, topics.input)
        private_redis.hang()
        try:
            produce(kafka_bootstrap, topics.input, records(phases[1]))
            during = read_topic(kafka_bootstrap, topics.scores, expect=310 * 3, settle=0.0)
            assert sum(ScoreEvent.model_validate_json(m.value()).degraded for m in during) > 0
            assert read_topic(kafka_bootstrap, topics.alerts, expect=1, timeout=1.0) == []
            assert not worker.metrics.ready() and worker.metrics.held_records._value.get() > 0
            assert committed_total(kafka_bootstrap, group, topics.input) <= before + 256
        finally:
            private_redis.wake()
        produce(kafka_bootstrap, topics.input, records(phases[2]))
        got = _alerts(kafka_bootstrap, topics.alerts, expect=2)
        read_topic(kafka_bootstrap, topics.scores, expect=340 * 3, settle=0.0)
        deadline = time.monotonic() + 30
        while committed_total(kafka_bootstrap, group, topics.input) < 340 * 3:
            assert time.monotonic() < deadline, "held records were never committed"
            time.sleep(0.2)
        assert worker.metrics.ready()
    assert got == expected
    assert counter_total(worker.metrics.late_alerts) >= 1
    assert counter_total(worker.metrics.degraded_records) > 0
