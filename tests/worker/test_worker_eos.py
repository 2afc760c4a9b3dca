"""Exactly-once mode (`worker.guarantee: exactly-once`) against the real broker: each batch's
outputs and input offsets in one transaction; an aborted batch is processed again and its
outputs appear once to read_committed consumers (the kill -9 case is in test_worker_crash.py)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import (
    DIM,
    Topics,
    committed,
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
from schemas.events import ScoreEvent

pytestmark = pytest.mark.integration

EOS = {"worker": {"guarantee": "exactly-once"}}


def _items(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rows = normal_values(n, seed=seed)
    return [(f"m{i % 4}".encode(), sensor_value(f"m{i % 4}", float(i), r)) for i, r in
            enumerate(rows)]  # fmt: skip


def _uncommitted_count(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` as a read_uncommitted consumer sees them (aborted ones too)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw-reader",
                         "isolation.level": "read_uncommitted"})  # fmt: skip
    partitions = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions.topics[topic].partitions])
    seen, idle = 0, 0
    try:
        while idle < 5:
            got = [m for m in consumer.consume(1000, timeout=0.2) if m.error() is None]
            seen, idle = seen + len(got), 0 if got else idle + 1
    finally:
        consumer.close()
    return seen


def test_each_input_offset_is_published_once_and_committed_with_it(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    items = _items(600, seed=21)
    produce(kafka_bootstrap, topics.input, items)
    group = group_factory()
    settings = make_settings(kafka_bootstrap, group, topics, redis_url=redis_url,
                             prefix=redis_prefix, max_records=64, sections=EOS)  # fmt: skip
    worker = make_worker(settings, detector)
    with running(worker):
        scores = read_topic(kafka_bootstrap, topics.scores, expect=len(items), settle=1.0)
        deadline = time.monotonic() + 20
        while committed_total(kafka_bootstrap, group, topics.input) < len(items):
            assert time.monotonic() < deadline, "offsets were not committed"
            time.sleep(0.2)
    sources = (ScoreEvent.model_validate_json(m.value()).source for m in scores)
    per_offset = Counter((src.partition, src.offset) for src in sources)
    assert len(per_offset) == len(items) and set(per_offset.values()) == {1}
    assert counter_total(worker.metrics.aborted_transactions) == 0


def test_a_failed_delivery_aborts_the_batch_and_it_is_published_once_after_all(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    """The alerts topic does not exist at first: every batch's transaction fails and is aborted,
    nothing is committed, and the worker rewinds; once the topic exists each record's score is
    visible exactly once to read_committed readers, while the aborted attempts are still in the
    log for a read_uncommitted one."""
    missing = f"{topics.alerts}.late"
    # One key, so one partition: the first batch starts with records far off the normal range,
    # which fire an alert at once (n = m = 1), so every attempt at it produces to the missing
    # topic; nothing after it can be committed before it is.
    outliers = [sensor_value("m0", float(i), np.full(DIM, 50.0)) for i in range(5)]
    normal = [sensor_value("m0", float(5 + i), r) for i, r in enumerate(normal_values(200, 22))]
    produce(kafka_bootstrap, topics.input, [(b"m0", v) for v in outliers + normal])
    total = len(outliers) + len(normal)
    group = group_factory()
    late = Topics(topics.input, topics.scores, missing, topics.dlq)
    settings = make_settings(
        kafka_bootstrap, group, late, redis_url=redis_url, prefix=redis_prefix,
        extra={"topic.metadata.propagation.max.ms": "1000"},
        sections={**EOS, "alerts": {"n_anomalous": 1, "window_m": 1}},
    )  # fmt: skip
    worker = make_worker(settings, detector)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        with running(worker):
            deadline = time.monotonic() + 40
            while counter_total(worker.metrics.aborted_transactions) < 2:
                assert time.monotonic() < deadline, "no transaction was aborted"
                time.sleep(0.2)
            assert set(committed(kafka_bootstrap, group, topics.input).values()) == {OFFSET_INVALID}
            admin.create_topics([NewTopic(missing, 1, 1)])[missing].result(30)
            scores = read_topic(kafka_bootstrap, topics.scores, expect=total, settle=2.0)
            deadline = time.monotonic() + 30
            while committed_total(kafka_bootstrap, group, topics.input) < total:
                assert time.monotonic() < deadline, "offsets were not committed after recovery"
                time.sleep(0.2)
        alerts = read_topic(kafka_bootstrap, missing, expect=1, settle=2.0)
    finally:
        admin.delete_topics([missing])
    sources = (ScoreEvent.model_validate_json(m.value()).source for m in scores)
    per_offset = Counter((src.partition, src.offset) for src in sources)
    assert len(per_offset) == total and set(per_offset.values()) == {1}
    assert len(alerts) >= 1
    assert _uncommitted_count(kafka_bootstrap, topics.scores) > total  # the aborted attempts
