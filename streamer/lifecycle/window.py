"""Read a time window of a topic without touching the workers' consumer group.

The retrain job reads three topics this way (input records, score events, labels). Each read
starts at ``offsets_for_times(start)`` and stops at the high watermark taken when the read
began, so a window is a fixed snapshot even while producers keep writing. The job's consumer
uses its own group id and ``enable.auto.commit=false`` and never calls ``commit``: it cannot
move the workers' offsets, and it leaves no committed offsets of its own that could matter.

With a ``limit``, each partition gets an equal share of it; a partition holding more records
than its share in the window is read in ``SEGMENTS`` evenly spaced runs instead of from end to
end, so a long window costs a bounded read while still covering its whole time span. With
``max_bytes`` the limit shrinks to what fits in that many bytes of message values (the mean
size measured on a few messages first), and a read never holds more than that.

:func:`iter_since` streams a window instead of holding it: the joins against the scores and
labels topics keep only what matches the sampled records, and the drift check reads only what
arrived since its last check (:func:`window_spans` with ``since``). The reader's own prefetch
queue is bounded too (``READER_QUEUE_KB``), so librdkafka does not buffer a topic ahead of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import AmaStreamError

__all__ = ["SEGMENTS", "Raw", "WindowError", "iter_since", "read_since", "sample_evenly",
           "window_spans"]  # fmt: skip

SEGMENTS = 8  # runs per capped partition: enough to span a day of traffic, few seeks
READER_QUEUE_KB = 4096  # librdkafka's prefetch per reader (its default, 64 MiB, would dwarf a cap)
_PROBE = 32  # messages whose mean size sets how many records fit a byte budget
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
    max_bytes: int | None = None,
) -> list[Raw]:
    """Every message of ``topic`` with a timestamp >= ``start_ms`` that existed when the read
    began; with ``limit`` (and ``max_bytes``), about that many (or as many as fit) at most,
    shared equally between the partitions and spread over the window."""
    return list(iter_since(client, group_id, topic, start_ms, limit=limit, max_bytes=max_bytes))


def iter_since(
    client: dict[str, Any],
    group_id: str,
    topic: str,
    start_ms: int,
    *,
    limit: int | None = None,
    max_bytes: int | None = None,
    spans: dict[int, tuple[int, int]] | None = None,
) -> Iterator[Raw]:
    """:func:`read_since`, one message at a time. ``spans`` (partition -> [first, end)
    offsets) reads those instead of the window from ``start_ms``."""
    consumer = _reader(client, group_id)
    try:
        if spans is None:
            spans = _spans(consumer, topic, start_ms)
        if max_bytes is not None and spans:
            size = _mean_size(consumer, topic, *min(spans.items()))
            limit = min(limit or max_bytes, max(1, max_bytes // size))
        share = None if limit is None or not spans else -(-limit // len(spans))  # ceil
        for partition, (lo, hi) in sorted(spans.items()):
            for a, b in _runs(lo, hi, share):
                yield from _iter_run(consumer, topic, partition, a, b)
    finally:
        consumer.close()


def window_spans(
    client: dict[str, Any],
    group_id: str,
    topic: str,
    start_ms: int,
    since: dict[int, int] | None = None,
) -> dict[int, tuple[int, int]]:
    """Per partition, [first offset at or after ``start_ms`` (or ``since[partition]`` where
    given), high watermark now): what :func:`iter_since` reads with ``spans``."""
    consumer = _reader(client, group_id)
    try:
        spans = _spans(consumer, topic, start_ms)
        if since is None:
            return spans
        out = {}
        for partition, high in _highs(consumer, topic).items():
            first = spans.get(partition, (high, high))[0]  # nothing left in the window: high
            lo = max(first, since.get(partition, first))
            if lo < high:
                out[partition] = (lo, high)
        return out
    finally:
        consumer.close()


def _reader(client: dict[str, Any], group_id: str) -> Consumer:
    return Consumer(
        {
            **client,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": READER_QUEUE_KB,
            "fetch.max.bytes": READER_QUEUE_KB * 1024,  # one fetch response at most that large
        }
    )


def _mean_size(consumer: Consumer, topic: str, partition: int, span: tuple[int, int]) -> int:
    """Mean value size, in bytes, of the first messages of a span (at least 1)."""
    lo, hi = span
    probe = list(_iter_run(consumer, topic, partition, lo, min(hi, lo + _PROBE)))
    return max(1, sum(len(r.value) for r in probe) // max(1, len(probe)))


def _spans(consumer: Consumer, topic: str, start_ms: int) -> dict[int, tuple[int, int]]:
    """Per partition, the offsets [first at or after start_ms, high watermark)."""
    try:
        highs = _highs(consumer, topic)
        wanted = [TopicPartition(topic, p, start_ms) for p in highs]
        found = consumer.offsets_for_times(wanted, timeout=10)
        spans: dict[int, tuple[int, int]] = {}
        for tp in found:
            high = highs[tp.partition]
            lo = high if tp.offset < 0 else tp.offset  # -1: nothing at or after start_ms
            if lo < high:
                spans[tp.partition] = (lo, high)
        return spans
    except KafkaException as exc:
        raise WindowError(f"topic {topic}: {exc}") from None


def _highs(consumer: Consumer, topic: str) -> dict[int, int]:
    """Per partition, the high watermark (the offset the next message will get)."""
    try:
        info = consumer.list_topics(topic, timeout=10).topics[topic]
        if info.error is not None:
            raise WindowError(f"topic {topic}: {info.error}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(info.partitions)
        }
    except KafkaException as exc:
        raise WindowError(f"topic {topic}: {exc}") from None


def _runs(lo: int, hi: int, cap: int | None) -> list[tuple[int, int]]:
    """[lo, hi) itself, or SEGMENTS evenly spaced runs of about cap/SEGMENTS offsets."""
    if cap is None or hi - lo <= cap:
        return [(lo, hi)]
    length = max(1, cap // SEGMENTS)
    starts = np.linspace(lo, hi - length, SEGMENTS).astype(np.int64)
    return [(int(s), int(s) + length) for s in starts]


def _iter_run(consumer: Consumer, topic: str, partition: int, lo: int, hi: int) -> Iterator[Raw]:
    consumer.assign([TopicPartition(topic, partition, lo)])
    deadline = time.monotonic() + _READ_TIMEOUT_S
    while time.monotonic() < deadline:
        messages = consumer.consume(1000, timeout=_POLL_S)
        if not messages and _position(consumer, topic, partition) >= hi:
            return  # the run ends in a gap (compaction, transaction markers)
        for m in messages:
            if m.error() is not None:
                raise WindowError(f"{topic}[{partition}]: {m.error()}")
            offset = m.offset()
            if offset is None or offset >= hi:
                return
            yield Raw(partition, offset, m.timestamp()[1], m.value() or b"")
            if offset == hi - 1:
                return
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
