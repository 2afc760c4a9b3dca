"""A producer floods a worker with distinct keys: Redis memory stays under the documented bound
(limits.max_keys keys of state, about 1 KiB each at most: docs/worker.md "Hostile input") and
the worker keeps scoring the keys it admitted.

Real broker, a private Redis (so its memory is this test's alone), the production-wired worker.
The flood is the issue's million distinct keys against a cap of 10,000 (about 25 s here);
``AMA_KEY_FLOOD=N`` floods N keys instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis
from confluent_kafka import Producer
from helpers import PrivateRedis, Topics, free_ports, make_settings, make_worker, running

from model.detector import AMADetector
from streamer.state.verdicts import ThresholdState

pytestmark = pytest.mark.integration

FLOOD = int(os.environ.get("AMA_KEY_FLOOD", "1000000"))
MAX_KEYS = max(10_000, FLOOD // 100)
BYTES_PER_KEY = 1024  # the documented bound per admitted key (measured ~0.4 KiB)
STEADY_EVERY = 500  # one record of a long-lived key per this many flood records


@pytest.fixture
def flood_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_ports(1)[0])
    server.start()
    yield server
    server.stop()


def _flood(bootstrap: str, topic: str) -> int:
    """FLOOD records of FLOOD distinct keys, with the steady key in between; returns how many
    steady records were sent."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000})  # fmt: skip
    values = b"[" + b",".join([b"0.1"] * 38) + b"]"
    steady = 0
    for i in range(FLOOD):
        if i % STEADY_EVERY == 0:
            producer.produce(topic, b'{"key":"steady","ts":%d,"values":%s}' % (1e9 + i, values))
            steady += 1
        key = b"flood-%d" % i
        producer.produce(topic, b'{"key":"%s","ts":%d,"values":%s}' % (key, 1e9 + i, values))
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return steady


def test_a_flood_of_distinct_keys_is_bounded_and_the_worker_keeps_scoring(
    kafka_bootstrap: str,
    flood_redis: PrivateRedis,
    topics: Topics,
    group_factory: object,
    detector: AMADetector,
) -> None:
    client = redis.Redis.from_url(flood_redis.url)
    baseline = int(client.info("memory")["used_memory"])
    settings = make_settings(
        kafka_bootstrap, group_factory(), topics, redis_url=flood_redis.url,  # type: ignore[operator]
        max_records=1024, sections={"limits": {"max_keys": MAX_KEYS}},
    )  # fmt: skip
    worker = make_worker(settings, detector)
    started = time.monotonic()
    with running(worker):
        steady = _flood(kafka_bootstrap, topics.input)
        total = FLOOD + steady
        deadline = time.monotonic() + 60 + FLOOD / 2000
        while worker.metrics.records_in._value.get() < total:
            assert time.monotonic() < deadline, "the worker fell behind the flood"
            time.sleep(0.5)
    seconds = time.monotonic() - started

    memory = client.info("memory")
    peak = int(memory["used_memory_peak"]) - baseline
    rejected = worker.metrics.rejects.labels("key_limit")._value.get()
    admitted = MAX_KEYS - 1  # the steady key took one place
    assert worker.metrics.tracked_keys._value.get() == MAX_KEYS
    assert rejected == FLOOD - admitted
    assert client.dbsize() == 2 * MAX_KEYS  # a stats and an alert hash per admitted key
    assert peak < MAX_KEYS * BYTES_PER_KEY, f"Redis grew {peak} bytes for {MAX_KEYS} keys"
    # The long-lived key was scored and learned all along, also after the cap was reached.
    reading = ThresholdState.from_settings(settings, client=redis.Redis.from_url(flood_redis.url))
    stats = reading.snapshot("steady", model_version=detector.model_version,
                             floor=detector.threshold).stats  # fmt: skip
    assert stats is not None and stats.n >= 0.9 * steady
    assert all(client.ttl(k) > 0 for k in client.scan_iter(count=1000, _type="hash"))
    print(
        f"key flood: {FLOOD:,} distinct keys, cap {MAX_KEYS:,}: {rejected:,.0f} dead-lettered "
        f"key_limit, Redis high-water {peak / 2**20:.1f} MiB above empty "
        f"({peak / MAX_KEYS:.0f} B per admitted key), used_memory_peak "
        f"{int(memory['used_memory_peak']) / 2**20:.1f} MiB; steady key learned {stats.n} of "
        f"{steady}; {seconds:.1f} s"
    )
