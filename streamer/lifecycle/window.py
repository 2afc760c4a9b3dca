"""Read a time window of a topic without touching the workers' consumer group.

The retrain job reads three topics this way (input records, score events, labels). Each read
starts at ``offsets_for_times(start)`` and stops at the high watermark taken when the read
began, so a window is a fixed snapshot even while producers keep writing. The job's consumer
uses its own group id and ``enable.auto.commit=false`` and never calls ``commit``: it cannot
move the workers' offsets, and it leaves no committed offsets of its own that could matter.

With a ``limit``, each partition gets an equal share of it; a partition holding more records
than its share in the window is read in ``SEGMENTS`` evenly spaced runs instead of from end to
end, so a long window costs a bounded read while still covering its whole time span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import AmaStreamError

__all__ = ["SEGMENTS", "Raw", "WindowError", "read_since", "sample_evenly"]

SEGMENTS = 8  # runs per capped partition: enough to span a day of traffic, few seeks
_POLL_S = 0.5
_READ_TIMEOUT_S = 120.0  # a snapshot read of a local or in-cluster topic; beyond it, give up


class WindowError(AmaStreamError):
    """A window could not be read (unknown topic, broker unreachable, read timed out)."""


@dataclass(frozen=True, slots=True)
class Raw:
    """One message of a window: where it came from and its value."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes


def read_since(
    client: dict[str, Any],
    group_id: str,
    topic: str,
    start_ms: int,
    *,
    limit: int | None = None,
) -> list[Raw]:
    """Every message of ``topic`` with a timestamp >= ``start_ms`` that existed when the read
    began; with ``limit``, about that many at most, shared equally between the partitions and
    spread over the window."""
    consumer = Consumer(
        {
            **client,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        spans = _spans(consumer, topic, start_ms)
        share = None if limit is None or not spans else -(-limit // len(spans))  # ceil
        out: list[Raw] = []
        for partition, (lo, hi) in sorted(spans.items()):
            for a, b in _runs(lo, hi, share):
                out.extend(_read_run(consumer, topic, partition, a, b))
        return out
    finally:
        consumer.close()


def _spans(consumer: Consumer, topic: str, start_ms: int) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [first at or after start_ms, high watermark)."""
    try:
        meta = consumer.list_topics(topic, timeout=10)
        info = meta.topics[topic]
        if info.error is not None:
            raise WindowError(f"topic {topic}: {info.error}")
        wanted = [TopicPartition(topic, p, start_ms) for p in sorted(info.partitions)]
        found = consumer.offsets_for_times(wanted, timeout=10)
        spans: dict[int, tuple[int, int]] = {}
        for tp in found:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            lo = high if tp.offset < 0 else tp.offset  # -1: nothing at or after start_ms
            if lo < high:
                spans[tp.partition] = (lo, high)
        return spans
    except KafkaException as exc:
        raise WindowError(f"topic {topic}: {exc}") from None


def _runs(lo: int, hi: int, cap: int | None) -> list[tuple[int, int]]:
    """[lo, hi) itself, or SEGMENTS evenly spaced runs of about cap/SEGMENTS offsets."""
    if cap is None or hi - lo <= cap:
        return [(lo, hi)]
    length = max(1, cap // SEGMENTS)
    starts = np.linspace(lo, hi - length, SEGMENTS).astype(np.int64)
    return [(int(s), int(s) + length) for s in starts]


def _read_run(consumer: Consumer, topic: str, partition: int, lo: int, hi: int) -> list[Raw]:
    """Messages with offsets in [lo, hi) of one partition (compacted gaps are fine)."""
    consumer.assign([TopicPartition(topic, partition, lo)])
    out: list[Raw] = []
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while time.monotonic() < deadline:
        messages = consumer.consume(1000, timeout=_POLL_S)
        if not messages and _position(consumer, topic, partition) >= hi:
            return out  # the run ends in a gap (compaction, transaction markers)
        for m in messages:
            if m.error() is not None:
                raise WindowError(f"{topic}[{partition}]: {m.error()}")
            offset = m.offset()
            if offset is None or offset >= hi:
                return out
            out.append(Raw(partition, offset, m.timestamp()[1], m.value() or b""))
            if offset == hi - 1:
                return out
    raise WindowError(f"{topic}[{partition}]: offsets {lo}..{hi} not read within the timeout")


def _position(consumer: Consumer, topic: str, partition: int) -> int:
    return int(consumer.position([TopicPartition(topic, partition)])[0].offset)


def sample_evenly(keys: list[str], n: int) -> np.ndarray:
    """Indices of at most ``n`` records, shared as equally as possible between keys (a key with
    fewer records gives its unused share to the others) and evenly spaced within each key.

    ``keys`` is in window order, so "evenly spaced" means spread over each key's time span:
    one chatty key cannot crowd out the others, and no part of the window is favoured.
    """
    by_key: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_key.setdefault(key, []).append(i)
    groups = sorted(by_key.values(), key=len)
    left = n
    picked: list[int] = []
    for rank, idx in enumerate(groups):
        take = min(len(idx), left // (len(groups) - rank))
        positions = np.linspace(0, len(idx) - 1, take).round().astype(np.int64)
        picked.extend(idx[int(p)] for p in positions)
        left -= take
    return np.array(sorted(picked), dtype=np.int64)
