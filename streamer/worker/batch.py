"""What goes into the pipeline core and what comes out: raw messages as a columnar batch, the
messages to produce, where they go, and the dead letters of records that cannot be processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from schemas.decode import Reject
from schemas.events import DeadLetter, Source

__all__ = ["OutMessage", "RawBatch", "RawMessage", "Topics", "dead_letters"]


class RawMessage(NamedTuple):
    """One input message as the broker gave it; ``value`` untouched (it may go to the DLQ).

    A named tuple, like :class:`OutMessage`: there is one per record, and a tuple is built
    several times faster than a frozen dataclass.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One micro-batch as columns: what the worker hands the core, without an object per record.

    Columns are aligned (one entry per message, in consume order). Tests and other runners that
    hold :class:`RawMessage`s can pass those to :func:`process_batch` instead.
    """

    topics: list[str]
    partitions: np.ndarray  # int64
    offsets: np.ndarray  # int64
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def of(cls, messages: Sequence[RawMessage]) -> RawBatch:
        return cls(
            topics=[m.topic for m in messages],
            partitions=np.array([m.partition for m in messages], dtype=np.int64),
            offsets=np.array([m.offset for m in messages], dtype=np.int64),
            keys=[m.key for m in messages],
            values=[m.value for m in messages],
        )

    @classmethod
    def of_kafka(cls, messages: Sequence[Any]) -> RawBatch:
        """From confluent-kafka messages (topic, partition and offset are set on every
        consumed message without an error)."""
        return cls(
            topics=[m.topic() or "" for m in messages],
            partitions=np.array([m.partition() for m in messages], dtype=np.int64),
            offsets=np.array([m.offset() for m in messages], dtype=np.int64),
            keys=[m.key() for m in messages],
            values=[m.value() for m in messages],
        )

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> RawBatch:
        """Messages ``start`` to ``stop`` (exclusive) as a batch of their own."""
        return RawBatch(
            self.topics[start:stop], self.partitions[start:stop], self.offsets[start:stop],
            self.keys[start:stop], self.values[start:stop],
        )  # fmt: skip

    def message(self, i: int) -> RawMessage:
        """Message ``i`` as a :class:`RawMessage` (for the rare per-record path: dead letters)."""
        return RawMessage(
            self.topics[i], int(self.partitions[i]), int(self.offsets[i]), self.keys[i],
            self.values[i],
        )  # fmt: skip


class OutMessage(NamedTuple):
    """One message to produce. ``kind`` says which output it is, for metrics and tests."""

    kind: Literal["score", "alert", "dead_letter"]
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]] | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """Where each kind of output goes."""

    scores: str
    alerts: str
    dlq: str


def dead_letters(
    messages: RawBatch, rejects: Sequence[Reject], topic: str, now: float
) -> list[OutMessage]:
    """One DLQ message per reject, keyed by the original key, with provenance headers.

    The headers repeat the body's ``source``, ``error`` and payload size and hash, so a DLQ
    consumer (or a replay tool) can route on them without parsing JSON.
    """
    out = []
    for reject in rejects:
        raw = messages.message(reject.index)
        letter = DeadLetter.for_payload(
            error=reject.code,
            detail=reject.detail,
            source=Source(topic=raw.topic, partition=raw.partition, offset=raw.offset),
            payload=raw.value,
            failed_at=now,
        )
        headers: list[tuple[str, str | bytes | None]] = [
            ("ama.error", reject.code.encode()),
            ("ama.source.topic", raw.topic.encode()),
            ("ama.source.partition", str(raw.partition).encode()),
            ("ama.source.offset", str(raw.offset).encode()),
            ("ama.payload.bytes", str(letter.payload_bytes).encode()),
            ("ama.payload.sha256", letter.payload_sha256.encode()),
            ("ama.payload.truncated", b"1" if letter.payload_truncated else b"0"),
        ]
        out.append(
            OutMessage("dead_letter", topic, raw.key, letter.model_dump_json().encode(), headers)
        )
    return out
