"""Output wire contracts: score events, alerts and dead letters, and their fast serialiser.

Every output is a frozen pydantic model so its JSON Schema can be exported and consumers can
validate. A score event is produced for every input record, so building one pydantic object per
record would cost more than scoring; :func:`score_events_json` writes the same JSON straight
from the batch arrays instead, and a test checks that its output validates against
:class:`ScoreEvent`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Annotated, Literal, Self

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from schemas.errors import AmaStreamError
from schemas.records import Key

__all__ = [
    "DLQ_MAX_PAYLOAD",
    "Alert",
    "DeadLetter",
    "EventError",
    "ScoreEvent",
    "Source",
    "alert_fingerprint",
    "score_events_json",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
EpochSeconds = Annotated[float, Field(allow_inf_nan=False, description="Epoch seconds (UTC).")]


class EventError(AmaStreamError):
    """Event fields that no consumer could parse (e.g. a NaN score); a bug upstream."""


class _Event(BaseModel):
    # Unknown fields are ignored so that adding an output field never breaks a consumer that
    # validates with an older copy of these models.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class Source(_Event):
    """Where the input record came from: enough to find it again in Kafka."""

    topic: str = Field(min_length=1)
    partition: NonNegativeInt
    offset: NonNegativeInt


class ScoreEvent(_Event):
    """The score of one input record; one per record, on the scores topic."""

    key: Key
    ts: EpochSeconds = Field(description="The record's event time, epoch seconds.")
    score: FiniteFloat = Field(description="Anomaly score; higher = more anomalous.")
    threshold: FiniteFloat = Field(description="The key's threshold at scoring time.")
    is_anomaly: bool = Field(description="The threshold policy's verdict for this record.")
    model_version: str = Field(min_length=1)
    source: Source
    scored_at: EpochSeconds = Field(description="Wall-clock time of scoring, epoch seconds.")
    top_features: list[NonNegativeInt] | None = Field(
        default=None,
        description="Vectors only: feature indices with the largest contributions, largest first.",
    )
    degraded: bool = Field(
        default=False,
        description="True when the threshold came from the worker's cache (Redis unreachable).",
    )


def alert_fingerprint(key: str, starts_at: float) -> str:
    """Stable id of one anomalous episode: the same key and episode start give the same id.

    Every worker (and a replay after a crash) derives the same id, so a consumer can de-duplicate
    at-least-once deliveries and pair a ``resolved`` with its ``firing``. ``repr`` of a float
    is its shortest round-trip form, identical on every platform.
    """
    payload = f"{key}\x00{float(starts_at)!r}".encode()
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


class Alert(_Event):
    """An anomalous episode of one key, Alertmanager-style: ``firing`` then ``resolved``."""

    alert_id: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="alert_fingerprint(key, starts_at)."
    )
    key: Key
    status: Literal["firing", "resolved"]
    starts_at: EpochSeconds
    ends_at: EpochSeconds | None = Field(description="Null while firing.")
    peak_score: FiniteFloat
    threshold: FiniteFloat
    n_anomalous: int = Field(ge=1, description="Anomalous records in the episode so far.")
    model_version: str = Field(min_length=1)
    severity: Literal["warning", "critical"]
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_lifecycle(self) -> Self:
        """A firing alert has no end; a resolved one ends at or after its start."""
        if self.status == "firing" and self.ends_at is not None:
            raise ValueError("a firing alert has ends_at = null")
        if self.status == "resolved" and (self.ends_at is None or self.ends_at < self.starts_at):
            raise ValueError("a resolved alert has ends_at >= starts_at")
        return self


#: Largest part of an original value a dead letter carries: base64 makes it 4/3 larger, and the
#: letter must stay under the broker's default 1 MB ``message.max.bytes`` with room to spare
#: (one the broker refuses would block the partition). A longer value is cut to this prefix;
#: its full size and SHA-256 say what the original was.
DLQ_MAX_PAYLOAD = 512 * 1024


class DeadLetter(_Event):
    """A record the worker could not process, with its original bytes, on the DLQ topic."""

    error: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Short stable code.")
    detail: str = Field(description="What went wrong, for a person.")
    source: Source
    payload_b64: str = Field(
        description="Standard base64 of the original value, untouched; only its first "
        "DLQ_MAX_PAYLOAD (512 KiB) bytes when payload_truncated."
    )
    payload_bytes: NonNegativeInt = Field(description="Size of the original value in bytes.")
    payload_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole original value (hex)."
    )
    payload_truncated: bool = Field(description="payload_b64 holds only a prefix.")
    failed_at: EpochSeconds

    @classmethod
    def for_payload(
        cls, *, error: str, detail: str, source: Source, payload: bytes | None, failed_at: float
    ) -> DeadLetter:
        """Build a dead letter from the raw message value (``None`` becomes empty)."""
        payload = payload or b""
        return cls(
            error=error,
            detail=detail,
            source=source,
            payload_b64=base64.b64encode(payload[:DLQ_MAX_PAYLOAD]).decode("ascii"),
            payload_bytes=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            payload_truncated=len(payload) > DLQ_MAX_PAYLOAD,
            failed_at=failed_at,
        )


def score_events_json(
    *,
    keys: Sequence[str],
    ts: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray,
    is_anomaly: np.ndarray,
    model_version: str,
    topic: str,
    partitions: np.ndarray,
    offsets: np.ndarray,
    scored_at: float,
    top_features: np.ndarray | None = None,
    degraded: bool = False,
) -> list[bytes]:
    """Serialise a batch of score events to one JSON document each, without pydantic.

    Arrays are aligned with ``keys`` (length n, keys as the decoder returns them: non-empty);
    ``top_features`` is (n, k) or None. Every check that :class:`ScoreEvent` would make on the
    numbers is made here, vectorised: :class:`EventError` on a non-finite number, a negative
    partition/offset/feature index, or an empty topic or model version.
    """
    n = len(keys)
    if not topic or not model_version:
        raise EventError("score_events_json: topic and model_version must be non-empty")
    if not np.isfinite(scored_at):
        raise EventError("score_events_json: scored_at must be finite")
    columns = (ts, scores, thresholds, is_anomaly, partitions, offsets)
    if any(len(column) != n for column in columns):
        raise EventError("score_events_json: all columns must have one entry per key")
    if top_features is not None and (top_features.ndim != 2 or top_features.shape[0] != n):
        raise EventError("score_events_json: top_features must be (n, k)")
    for name, column in (("ts", ts), ("scores", scores), ("thresholds", thresholds)):
        if not np.isfinite(column).all():
            raise EventError(f"score_events_json: {name} must be finite")
    non_negative = {"partitions": partitions, "offsets": offsets}
    if top_features is not None:
        non_negative["top_features"] = top_features
    for name, column in non_negative.items():
        if column.size and int(column.min()) < 0:
            raise EventError(f"score_events_json: {name} must be >= 0")

    # .tolist() turns numpy scalars into Python ones in one C call; orjson then writes them.
    anomalous = is_anomaly.astype(bool).tolist()
    features = top_features.tolist() if top_features is not None else [None] * n
    dumps = orjson.dumps
    return [
        dumps(
            {
                "key": key,
                "ts": t,
                "score": s,
                "threshold": th,
                "is_anomaly": a,
                "model_version": model_version,
                "source": {"topic": topic, "partition": p, "offset": o},
                "scored_at": float(scored_at),
                "top_features": f,
                "degraded": degraded,
            }
        )
        for key, t, s, th, a, p, o, f in zip(
            keys,
            ts.astype(np.float64).tolist(),
            scores.astype(np.float64).tolist(),
            thresholds.astype(np.float64).tolist(),
            anomalous,
            partitions.astype(np.int64).tolist(),
            offsets.astype(np.int64).tolist(),
            features,
            strict=True,
        )
    ]
