"""End-to-end latency at a fixed offered rate, from timestamps outside the worker.

The input producer stamps each record's ``ts`` with the wall clock when it calls ``produce``;
the scores topic is created with ``message.timestamp.type=LogAppendTime``, so every score
event carries the time the broker appended it, which on this single-replica broker is the
moment it acknowledges it (acks=all). Latency = append time - input ``ts``, per record, on one
clock (producer, worker and broker share the machine). Records sent during the first
``warmup_s`` are left out: the first batches also pay for the model's first calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.data import KEYS, BenchError

__all__ = ["Latency", "offer", "read_latencies", "summarise"]


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of end-to-end latency, ms, at ``offered_per_s``."""

    offered_per_s: float
    sent_per_s: float  # what the paced producer achieved
    records: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def offer(
    bootstrap: str, topic: str, rows: np.ndarray, rate: float, seconds: float
) -> tuple[int, float, float]:
    """Produce ``rate`` SensorRecords per second for ``seconds``, ``ts`` = time of produce().

    Returns how many were sent (all acknowledged), the wall-clock time the first was sent, and
    how long sending took.
    """
    total = int(rate * seconds)
    # The record minus its ts, pre-encoded: only the timestamp is formatted at send time.
    tails = [b',"values":' + orjson.dumps(row) + b"}" for row in rows[:total].tolist()]
    heads = [b'{"key":"machine-%d","ts":' % (i % KEYS) for i in range(KEYS)]
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    first = time.time()
    started = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            value = heads[sent % KEYS] + repr(time.time()).encode() + tails[sent % len(tails)]
            try:
                producer.produce(topic, value=value, key=b"machine-%d" % (sent % KEYS))
            except BufferError:
                break
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    took = time.monotonic() - started
    if producer.flush(60):
        raise BenchError("latency run: input records not acknowledged")
    return sent, first, took


def read_latencies(
    bootstrap: str, scores_topic: str, partitions: int, expected: int, since: float
) -> np.ndarray:
    """Latency in seconds of every score event whose input was sent at or after ``since``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{scores_topic}.reader",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(scores_topic, p, 0) for p in range(partitions)])
    out: list[float] = []
    seen = 0
    deadline = time.monotonic() + 60
    while seen < expected and time.monotonic() < deadline:
        for m in consumer.consume(10_000, 1.0):
            if m.error():
                continue
            seen += 1
            ts = orjson.loads(m.value() or b"{}")["ts"]
            if ts >= since:
                out.append(m.timestamp()[1] / 1000 - ts)
    consumer.close()
    if seen < expected:
        raise BenchError(f"latency run: {seen} of {expected} score events found")
    return np.asarray(out)


def summarise(latencies: np.ndarray, offered: float, sent_per_s: float) -> Latency:
    """Percentiles of ``latencies`` (seconds) in ms."""
    p50, p95, p99, top = np.percentile(latencies, [50, 95, 99, 100]) * 1000
    return Latency(offered, sent_per_s, len(latencies), float(p50), float(p95), float(p99),
                   float(top))  # fmt: skip
