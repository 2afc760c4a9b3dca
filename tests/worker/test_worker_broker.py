"""The broker goes away for a while: the worker waits, resumes, and loses nothing.

Runs against a private broker + Redis (`LocalStack` in a temporary state dir on free ports),
so stopping its broker cannot disturb other tests. Records produced while the broker is down
are buffered by their producer and arrive after it returns.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import Topics, free_ports, make_settings, make_worker, read_topic, running
from worker_support import normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import ScoreEvent
from streamer.devtools.local_stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LocalStack]:
    kafka, controller, redis_port = free_ports(3)
    stack = LocalStack(
        state_dir=tmp_path / "stack",
        kafka_port=kafka,
        controller_port=controller,
        redis_port=redis_port,
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()  # also when start-up failed: no orphaned broker


def test_broker_outage_worker_waits_and_resumes_without_loss(
    private_stack: LocalStack, detector: AMADetector
) -> None:
    bootstrap = private_stack.bootstrap
    topics = Topics("in", "scores", "alerts", "dlq")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, 2 if t == "in" else 1, 1) for t in ("in", "scores", "alerts", "dlq")]
    for future in admin.create_topics(new).values():
        future.result(30)
    rows = normal_values(1500, seed=21)
    values = [sensor_value(f"m{i % 4}", float(i), r) for i, r in enumerate(rows)]
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 300_000})

    def send(part: range) -> None:
        for i in part:
            producer.produce("in", value=values[i], key=f"m{i % 4}".encode())
            producer.poll(0)

    settings = make_settings(bootstrap, "g", topics, redis_url=private_stack.redis_url)
    worker = make_worker(settings, detector)
    with running(worker):
        send(range(0, 500))
        producer.flush(30)
        deadline = time.monotonic() + 60
        while worker.metrics.records_in._value.get() < 500:
            assert time.monotonic() < deadline, "the worker did not score the first records"
            time.sleep(0.2)
        private_stack.down(["kafka"])  # only the broker goes
        send(range(500, 1000))  # buffered in the producer while the broker is down
        time.sleep(5.0)
        private_stack.up()
        flusher = threading.Thread(target=producer.flush, args=(120,))
        flusher.start()
        flusher.join()
        send(range(1000, 1500))
        producer.flush(60)
        messages = read_topic(bootstrap, "scores", expect=1500, timeout=120, settle=2.0)

    events = [ScoreEvent.model_validate_json(m.value()) for m in messages]
    per_offset = Counter((e.source.partition, e.source.offset) for e in events)
    assert len(per_offset) == 1500, "records were lost across the broker outage"
    # Per key, in topic order, every record's first score event comes after those of the
    # records before it: a retry never puts an event behind newer ones.
    first_seen: dict[str, list[int]] = {}
    seen: set[tuple[int, int]] = set()
    for e in events:
        if (e.source.partition, e.source.offset) not in seen:
            seen.add((e.source.partition, e.source.offset))
            first_seen.setdefault(e.key, []).append(e.source.offset)
    assert all(offsets == sorted(offsets) for offsets in first_seen.values())
    print(f"broker outage: {sum(per_offset.values()) - 1500} duplicate score events")
