"""The pipeline core: one micro-batch of raw messages in, the messages to produce out.

decode -> score -> thresholds/alerts -> events. It knows nothing about the Kafka client: the
confluent-kafka worker, a faust runner and unit tests all hand it a batch of raw messages
(streamer/worker/batch.py) and get back the messages to produce plus the numbers the metrics
need. Redis stays behind the :class:`VerdictSource` it is given, and the model behind
:class:`Detector`, so a test can run the whole core with fakes or with the real pieces.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from schemas.decode import DecodedBatch, Reject, decode_images, decode_vectors
from schemas.events import Alert, score_events_json
from streamer.worker.batch import OutMessage, RawBatch, RawMessage, Topics, dead_letters
from streamer.worker.keys import KeyBudget

__all__ = [
    "BatchResult",
    "Detector",
    "VerdictRequest",
    "VerdictSource",
    "Verdicts",
    "process_batch",
]


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


@dataclass(frozen=True, slots=True)
class VerdictRequest:
    """The arguments of one :meth:`VerdictSource.apply` call, kept when a batch was judged
    degraded so that its records can be applied to the shared state once Redis is back."""

    model_version: str
    floor: float
    keys: list[str]
    scores: np.ndarray
    ts: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def apply(self, source: VerdictSource) -> Verdicts:
        return source.apply(
            model_version=self.model_version, floor=self.floor, keys=self.keys,
            scores=self.scores, ts=self.ts, partitions=self.partitions, offsets=self.offsets,
        )  # fmt: skip

    def only(self, keep: np.ndarray) -> VerdictRequest:
        """The records where ``keep`` is True."""
        rows = np.flatnonzero(keep).tolist()
        return VerdictRequest(
            self.model_version, self.floor, [self.keys[r] for r in rows], self.scores[keep],
            self.ts[keep], self.partitions[keep], self.offsets[keep],
        )  # fmt: skip


@dataclass(slots=True)
class BatchResult:
    """Everything one batch produced: messages in produce order, and what metrics need.

    ``messages`` holds dead letters first, then score events in input order, then alert
    transitions, so a consumer of the scores topic sees each key's records in offset order.
    ``unjudged`` holds the verdict requests that Redis could not take (degraded batches): the
    worker applies them to the shared state later, and commits only then.
    """

    messages: list[OutMessage]
    model_version: str
    n_in: int
    n_valid: int
    rejects: Counter[str]
    record_ts: np.ndarray  # float64 event times of the valid records, for end-to-end latency
    alerts: Counter[str]  # transitions by status ("firing" / "resolved")
    unjudged: list[VerdictRequest] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # "decode", "score", "verdicts"

    @property
    def degraded(self) -> bool:
        return bool(self.unjudged)

    @classmethod
    def merge(cls, parts: Sequence[BatchResult]) -> BatchResult:
        """The results of consecutive pieces of one batch as one, in piece order."""
        seconds: Counter[str] = Counter()
        for part in parts:
            seconds.update(part.seconds)
        return cls(
            messages=[m for part in parts for m in part.messages],
            model_version=parts[0].model_version,
            n_in=sum(part.n_in for part in parts),
            n_valid=sum(part.n_valid for part in parts),
            rejects=sum((part.rejects for part in parts), Counter()),
            record_ts=np.concatenate([part.record_ts for part in parts]),
            alerts=sum((part.alerts for part in parts), Counter()),
            unjudged=[request for part in parts for request in part.unjudged],
            seconds=dict(seconds),
        )


def _decode(detector: Detector, values: Sequence[bytes | None], max_bytes: int) -> DecodedBatch:
    if detector.kind == "vector":
        return decode_vectors(values, dim=detector.input_shape[0], max_bytes=max_bytes)
    c, h, w = detector.input_shape
    return decode_images(values, shape=(c, h, w), max_bytes=max_bytes)


def _drop_rows(batch: DecodedBatch, keep: np.ndarray, code: str, detail: str) -> DecodedBatch:
    """``batch`` without the rows where ``keep`` is False; each of those becomes a reject."""
    bad = [Reject(int(batch.index[row]), code, detail) for row in np.flatnonzero(~keep).tolist()]
    rows = np.flatnonzero(keep).tolist()
    return DecodedBatch(
        batch.values[keep], [batch.keys[r] for r in rows], batch.ts[keep],
        batch.index[keep], sorted(batch.rejects + bad, key=lambda reject: reject.index),
    )  # fmt: skip


def _drop_unscorable(
    batch: DecodedBatch, scores: np.ndarray, features: np.ndarray | None
) -> tuple[DecodedBatch, np.ndarray, np.ndarray | None]:
    """Records whose score is not finite become rejects here, where the score arises: no
    threshold, statistic or event could use it (the detector's bug, or an input it cannot
    handle), and the rest of the batch goes on."""
    finite = np.isfinite(scores)
    if finite.all():
        return batch, scores, features
    kept = _drop_rows(batch, finite, "non_finite_score", "the model scored it NaN or infinite")
    return kept, scores[finite], None if features is None else features[finite]


def _over_budget(batch: DecodedBatch, keys: KeyBudget | None) -> DecodedBatch:
    """Records of keys beyond the worker's key budget become rejects before they are scored:
    they would add Redis state past ``limits.max_keys`` (streamer/worker/keys.py)."""
    admitted = keys.admit(batch.keys) if keys is not None and batch.keys else None
    if admitted is None:
        return batch
    detail = f"this worker already tracks limits.max_keys = {keys.max_keys} keys"  # type: ignore[union-attr]
    return _drop_rows(batch, admitted, "key_limit", detail)


def process_batch(
    messages: RawBatch | Sequence[RawMessage],
    *,
    detector: Detector,
    verdicts: VerdictSource,
    topics: Topics,
    max_bytes: int,
    top_k: int = 3,
    keys: KeyBudget | None = None,
) -> BatchResult:
    """Decode, score and judge one micro-batch; return every message to produce for it.

    The caller must produce all of ``messages`` and see them acknowledged before committing the
    input offsets of this batch (docs/worker.md). ``detector`` is read once at the start, so a
    hot swap between batches never mixes two model versions in one batch. ``keys``, if given,
    bounds the distinct keys judged (records of other keys become ``key_limit`` dead letters).
    """
    started = time.perf_counter()
    raw = messages if isinstance(messages, RawBatch) else RawBatch.of(messages)
    model_version = detector.model_version
    batch = _over_budget(_decode(detector, raw.values, max_bytes), keys)
    decoded = time.perf_counter()
    scores, features = np.empty(0), None
    if batch.keys:
        # One call = one host-to-device copy of the whole batch (the detector's contract).
        k = top_k if detector.kind == "vector" else 0
        scores, features = detector.score_with_features(batch.values, k)
        batch, scores, features = _drop_unscorable(batch, scores, features)
    scored = time.perf_counter()
    result = BatchResult(
        messages=dead_letters(raw, batch.rejects, topics.dlq, time.time()),
        model_version=model_version,
        n_in=len(raw),
        n_valid=len(batch.keys),
        rejects=Counter(r.code for r in batch.rejects),
        record_ts=batch.ts,
        alerts=Counter(),
        seconds={"decode": decoded - started, "score": scored - decoded},
    )
    if not batch.keys:
        return result

    request = VerdictRequest(
        model_version, detector.threshold, batch.keys, scores, batch.ts,
        raw.partitions[batch.index], raw.offsets[batch.index],
    )  # fmt: skip
    verdict = request.apply(verdicts)
    result.seconds["verdicts"] = time.perf_counter() - scored
    if verdict.degraded:
        result.unjudged.append(request)
    result.messages += _score_events(raw, batch, request, verdict, features, topics.scores)
    for alert in verdict.alerts:
        result.messages.append(
            OutMessage("alert", topics.alerts, alert.key.encode(), alert.model_dump_json().encode())
        )
        result.alerts[alert.status] += 1
    return result


def _score_events(
    raw: RawBatch,
    batch: DecodedBatch,
    request: VerdictRequest,
    verdict: Verdicts,
    features: np.ndarray | None,
    topic: str,
) -> list[OutMessage]:
    """The score events of the batch's valid records, in input order.

    Serialised per input topic because ``source.topic`` is one string per call; a worker
    normally reads one topic, so this is one call.
    """
    out: list[OutMessage] = []
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
            scores=request.scores[rows],
            thresholds=np.asarray(verdict.thresholds)[rows],
            is_anomaly=np.asarray(verdict.is_anomaly)[rows],
            model_version=request.model_version,
            topic=in_topic,
            partitions=request.partitions[rows],
            offsets=request.offsets[rows],
            scored_at=time.time(),
            top_features=features[rows] if features is not None else None,
            degraded=verdict.degraded,
        )
        out.extend(
            OutMessage("score", topic, key.encode(), body)
            for key, body in zip(keys, bodies, strict=True)
        )
    return out
