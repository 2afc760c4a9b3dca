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
    make_settings,
    make_worker,
    produce,
    read_topic,
    running,
)
from worker_support import normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import ScoreEvent
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
