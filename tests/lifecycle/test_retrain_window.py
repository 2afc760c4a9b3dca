"""Reading a time window of a topic: by time, capped and spread, never committing
(real Kafka)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.lifecycle.window import SEGMENTS, read_since

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    """Values ``start .. start + n - 1``, alternating between the two partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + n):
        producer.produce(topic, str(i).encode(), partition=i % 2)
    assert producer.flush(30) == 0


def test_window_starts_at_a_time_is_capped_evenly_and_never_commits(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str]
) -> None:
    topic, group = topic_factory("in", partitions=2), group_factory()
    client = {"bootstrap.servers": kafka_bootstrap}
    _produce(kafka_bootstrap, topic, 300)
    time.sleep(1.0)
    start_ms = int(time.time() * 1000)
    _produce(kafka_bootstrap, topic, 2000, start=300)

    window = read_since(client, group, topic, start_ms)
    assert sorted(int(r.value) for r in window) == list(range(300, 2300))
    assert all(r.timestamp_ms >= start_ms for r in window)

    capped = read_since(client, group, topic, start_ms, limit=320)  # 160 per partition
    by_partition: dict[int, list[int]] = {}
    for r in capped:
        by_partition.setdefault(r.partition, []).append(r.offset)
    assert sorted(by_partition) == [0, 1]
    for partition, offsets in by_partition.items():
        full = sorted(r.offset for r in window if r.partition == partition)
        assert len(offsets) == SEGMENTS * (160 // SEGMENTS)  # bounded read
        assert offsets[0] == full[0] and offsets[-1] == full[-1]  # spans the whole window

    assert read_since(client, group, topic, int(time.time() * 1000) + 60_000) == []
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        assert {tp.offset for tp in consumer.committed(tps, timeout=10)} == {-1001}
    finally:
        consumer.close()
