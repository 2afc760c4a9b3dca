"""Two workers in one group: they split the partitions, and a clean stop hands over with no gap."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import Topics, make_settings, make_worker, produce, read_topic, running
from worker_support import normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import ScoreEvent
from streamer.worker.loop import Worker

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def owned(worker: Worker) -> float:
    return worker.metrics.assigned_partitions._value.get()


def test_two_workers_split_partitions_and_a_stopped_one_hands_over_without_gap(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    settings = make_settings(
        kafka_bootstrap,
        group_factory(),
        topics,
        redis_url=redis_url,
        prefix=redis_prefix,
        max_records=64,
    )
    rows = normal_values(3000, seed=7)
    items = [
        (f"m{i % 16}".encode(), sensor_value(f"m{i % 16}", float(i), r)) for i, r in enumerate(rows)
    ]
    first, second = make_worker(settings, detector), make_worker(settings, detector)

    def feed() -> None:  # records keep arriving while the group changes
        for start in range(0, len(items), 100):
            produce(kafka_bootstrap, topics.input, items[start : start + 100])
            time.sleep(0.1)

    with running(first), running(second):
        wait_for(lambda: owned(first) == 2 and owned(second) == 2, "a 2+2 split")
        feeder = threading.Thread(target=feed)
        feeder.start()
        wait_for(lambda: first.metrics.records_in._value.get() > 200, "the first worker to score")
        first.stop()
        wait_for(lambda: owned(second) == 4, "the handover")
        feeder.join()
        scores = read_topic(kafka_bootstrap, topics.scores, expect=len(items), settle=2.0)

    per_offset = Counter(
        (e.source.partition, e.source.offset)
        for e in (ScoreEvent.model_validate_json(m.value()) for m in scores)
    )
    assert len(per_offset) == len(items), "some input offsets were never scored"
    assert first.metrics.records_in._value.get() > 0 and second.metrics.records_in._value.get() > 0
    # The stopping worker committed its in-flight batch before letting go, and the survivor's
    # own revoke (eager) did the same: a clean handover scores nothing twice.
    assert sum(per_offset.values()) == len(items)


class Slow:
    """The real detector, a fixed 0.2 s slower per batch: a rebalance then reliably lands while
    one batch is in flight and the next is being scored."""

    def __init__(self, detector: AMADetector) -> None:
        self._detector = detector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def score_with_features(self, x: np.ndarray, top_k: int) -> tuple[np.ndarray, Any]:
        time.sleep(0.2)
        return self._detector.score_with_features(x, top_k)


def test_a_rebalance_while_the_next_batch_is_scored_drops_it_unproduced(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    """Two batches in flight (one produced, one scored): a rebalance drops the scored one before
    it is produced, so no output overtakes the commit order; its records are scored again
    from the committed offsets, and every key's events keep their input order."""
    settings = make_settings(
        kafka_bootstrap, group_factory(), topics, redis_url=redis_url, prefix=redis_prefix,
        max_records=32,
    )  # fmt: skip
    rows = normal_values(1500, seed=8)
    items = [
        (f"m{i % 8}".encode(), sensor_value(f"m{i % 8}", float(i), r)) for i, r in enumerate(rows)
    ]
    produce(kafka_bootstrap, topics.input, items)
    first = make_worker(settings, Slow(detector))  # type: ignore[arg-type]
    second = make_worker(settings, Slow(detector))  # type: ignore[arg-type]
    with running(first):
        wait_for(lambda: first.metrics.records_in._value.get() > 100, "the first worker to score")
        with running(second):  # joining rebalances the group while the first is busy
            scores = read_topic(kafka_bootstrap, topics.scores, expect=len(items), settle=2.0)
    events = [ScoreEvent.model_validate_json(m.value()) for m in scores]
    per_offset = Counter((e.source.partition, e.source.offset) for e in events)
    assert len(per_offset) == len(items), "some input offsets were never scored"
    assert first.metrics.rebalance_drops._value.get() >= 1  # the case this test is about
    first_seen: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        where = (e.source.partition, e.source.offset)
        if where not in first_seen.setdefault(e.key, []):
            first_seen[e.key].append(where)
    assert all(seen == sorted(seen) for seen in first_seen.values())
