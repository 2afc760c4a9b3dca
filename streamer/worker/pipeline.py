"""The pipeline core: one micro-batch of raw messages in, the messages to produce out.

decode -> score -> thresholds/alerts -> events. It knows nothing about the Kafka client: the
confluent-kafka worker, a faust runner and unit tests all hand it plain :class:`RawMessage`s and
get back :class:`OutMessage`s plus the numbers the metrics need. Redis stays behind the
:class:`VerdictSource` it is given, and the model behind :class:`Detector`, so a test can run the
whole core with fakes or with the real pieces.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np

from schemas.decode import DecodedBatch, decode_images, decode_vectors
from schemas.events import Alert, DeadLetter, Source, score_events_json

__all__ = [
    "DLQ_MAX_PAYLOAD",
    "BatchResult",
    "Detector",
    "OutMessage",
    "RawBatch",
    "RawMessage",
    "Topics",
    "VerdictSource",
    "Verdicts",
    "process_batch",
]


#: Largest original payload copied into a dead letter: base64 makes it 4/3 larger, and the
#: result must stay under the broker's default 1 MB ``message.max.bytes`` with room to spare.
DLQ_MAX_PAYLOAD = 512 * 1024


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

    def __len__(self) -> int:
        return len(self.values)

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


class Detector(Protocol):
    """What the core needs from a model (``model.detector.AMADetector`` is one)."""

    @property
    def kind(self) -> Literal["vector", "image"]: ...
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def model_version(self) -> str: ...
    @property
    def threshold(self) -> float: ...

    def score_with_features(
        self, x: np.ndarray, top_k: int
    ) -> tuple[np.ndarray, np.ndarray | None]: ...


class Verdicts(Protocol):
    """Per-record thresholds and verdicts for one batch, plus the alert transitions."""

    @property
    def thresholds(self) -> np.ndarray: ...
    @property
    def is_anomaly(self) -> np.ndarray: ...
    @property
    def alerts(self) -> Sequence[Alert]: ...
    @property
    def degraded(self) -> bool: ...


class VerdictSource(Protocol):
    """Thresholds and alert state (``streamer.state.ThresholdState`` is one).

    ``partitions``/``offsets`` let it apply each record at most once, so a batch replayed after
    a crash does not count twice in the statistics.
    """

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        keys: Sequence[str],
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> Verdicts: ...


@dataclass(slots=True)
class BatchResult:
    """Everything one batch produced: messages in produce order, and what metrics need.

    ``messages`` holds dead letters first, then score events in input order, then alert
    transitions, so a consumer of the scores topic sees each key's records in offset order.
    """

    messages: list[OutMessage]
    model_version: str
    n_in: int
    n_valid: int
    rejects: Counter[str]
    record_ts: np.ndarray  # float64 event times of the valid records, for end-to-end latency
    alerts: Counter[str]  # transitions by status ("firing" / "resolved")
    degraded: bool
    seconds: dict[str, float] = field(default_factory=dict)  # "decode", "score", "verdicts"


def _decode(detector: Detector, values: Sequence[bytes | None], max_bytes: int) -> DecodedBatch:
    if detector.kind == "vector":
        return decode_vectors(values, dim=detector.input_shape[0], max_bytes=max_bytes)
    c, h, w = detector.input_shape
    return decode_images(values, shape=(c, h, w), max_bytes=max_bytes)


def _dead_letters(
    messages: RawBatch, batch: DecodedBatch, topic: str, now: float
) -> list[OutMessage]:
    """One DLQ message per reject, keyed by the original key, with provenance headers.

    The headers duplicate the body's ``source`` and ``error`` so a DLQ consumer (or a replay
    tool) can route on them without parsing JSON. A payload over :data:`DLQ_MAX_PAYLOAD` is
    truncated (said in ``detail`` and an ``ama.payload.bytes`` header): base64 grows it by a
    third, and a dead letter the broker refuses as too large would block the partition forever.
    """
    out = []
    for reject in batch.rejects:
        raw = messages.message(reject.index)
        payload, detail = raw.value, reject.detail
        size = len(payload or b"")
        if size > DLQ_MAX_PAYLOAD:
            payload = (payload or b"")[:DLQ_MAX_PAYLOAD]
            detail += f" (payload truncated to its first {DLQ_MAX_PAYLOAD} of {size} bytes)"
        letter = DeadLetter.for_payload(
            error=reject.code,
            detail=detail,
            source=Source(topic=raw.topic, partition=raw.partition, offset=raw.offset),
            payload=payload,
            failed_at=now,
        )
        headers: list[tuple[str, str | bytes | None]] = [
            ("ama.error", reject.code.encode()),
            ("ama.source.topic", raw.topic.encode()),
            ("ama.source.partition", str(raw.partition).encode()),
            ("ama.source.offset", str(raw.offset).encode()),
            ("ama.payload.bytes", str(size).encode()),
        ]
        out.append(
            OutMessage("dead_letter", topic, raw.key, letter.model_dump_json().encode(), headers)
        )
    return out


def process_batch(
    messages: RawBatch | Sequence[RawMessage],
    *,
    detector: Detector,
    verdicts: VerdictSource,
    topics: Topics,
    max_bytes: int,
    top_k: int = 3,
) -> BatchResult:
    """Decode, score and judge one micro-batch; return every message to produce for it.

    The caller must produce all of ``messages`` and see them acknowledged before committing the
    input offsets of this batch (docs/worker.md). ``detector`` is read once at the start, so a
    hot swap between batches never mixes two model versions in one batch.
    """
    started = time.perf_counter()
    raw = messages if isinstance(messages, RawBatch) else RawBatch.of(messages)
    model_version = detector.model_version
    batch = _decode(detector, raw.values, max_bytes)
    decoded = time.perf_counter()
    out = _dead_letters(raw, batch, topics.dlq, time.time())
    result = BatchResult(
        messages=out,
        model_version=model_version,
        n_in=len(raw),
        n_valid=len(batch.keys),
        rejects=Counter(r.code for r in batch.rejects),
        record_ts=batch.ts,
        alerts=Counter(),
        degraded=False,
        seconds={"decode": decoded - started},
    )
    if not batch.keys:
        return result

    # One call = one host-to-device copy of the whole batch (the detector's contract).
    k = top_k if detector.kind == "vector" else 0
    scores, features = detector.score_with_features(batch.values, k)
    scored = time.perf_counter()
    partitions = raw.partitions[batch.index]
    offsets = raw.offsets[batch.index]
    verdict = verdicts.apply(
        model_version=model_version,
        floor=detector.threshold,
        keys=batch.keys,
        scores=scores,
        ts=batch.ts,
        partitions=partitions,
        offsets=offsets,
    )
    judged = time.perf_counter()

    # Score events are serialised per input topic because ``source.topic`` is one string per
    # call; a worker normally reads one topic, so this is one call.
    distinct = dict.fromkeys(raw.topics)
    in_topics = raw.topics if len(distinct) == 1 else [raw.topics[i] for i in batch.index]
    for in_topic in dict.fromkeys(in_topics):
        if len(distinct) == 1:
            rows, keys = np.arange(len(batch.keys)), batch.keys
        else:
            rows = np.flatnonzero([t == in_topic for t in in_topics])
            keys = [batch.keys[i] for i in rows.tolist()]
        bodies = score_events_json(
            keys=keys,
            ts=batch.ts[rows],
            scores=scores[rows],
            thresholds=np.asarray(verdict.thresholds)[rows],
            is_anomaly=np.asarray(verdict.is_anomaly)[rows],
            model_version=model_version,
            topic=in_topic,
            partitions=partitions[rows],
            offsets=offsets[rows],
            scored_at=time.time(),
            top_features=features[rows] if features is not None else None,
            degraded=verdict.degraded,
        )
        out.extend(
            OutMessage("score", topics.scores, key.encode(), body)
            for key, body in zip(keys, bodies, strict=True)
        )
    for alert in verdict.alerts:
        out.append(
            OutMessage("alert", topics.alerts, alert.key.encode(), alert.model_dump_json().encode())
        )
        result.alerts[alert.status] += 1
    result.degraded = verdict.degraded
    result.seconds["score"] = scored - decoded
    result.seconds["verdicts"] = judged - scored
    return result
