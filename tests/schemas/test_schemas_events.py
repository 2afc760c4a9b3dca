"""Output contracts: round trips, alert lifecycle, fingerprints, and the fast serialiser."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from pydantic import BaseModel, ValidationError

from schemas.events import (
    Alert,
    DeadLetter,
    EventError,
    ScoreEvent,
    Source,
    alert_fingerprint,
    score_events_json,
)

SOURCE = Source(topic="ama.input", partition=3, offset=42)


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": alert_fingerprint("pump-1", 100.0),
        "key": "pump-1",
        "status": "firing",
        "starts_at": 100.0,
        "ends_at": None,
        "peak_score": 9.5,
        "threshold": 3.0,
        "n_anomalous": 3,
        "model_version": "v1",
        "severity": "warning",
        "labels": {"site": "a"},
    }
    fields.update(changes)
    return Alert.model_validate(fields)


@pytest.mark.parametrize(
    "event",
    [
        ScoreEvent(
            key="k",
            ts=1.5,
            score=0.3,
            threshold=1.0,
            is_anomaly=False,
            model_version="v1",
            source=SOURCE,
            scored_at=2.0,
        ),
        ScoreEvent(
            key="k",
            ts=1.5,
            score=3.0,
            threshold=1.0,
            is_anomaly=True,
            model_version="v1",
            source=SOURCE,
            scored_at=2.0,
            top_features=[4, 0, 2],
            degraded=True,
        ),
        _alert(),
        _alert(status="resolved", ends_at=160.0),
        DeadLetter.for_payload(
            error="not_json", detail="bad", source=SOURCE, payload=b"\x00{", failed_at=3.0
        ),
    ],
)
def test_round_trip(event: BaseModel) -> None:
    assert type(event).model_validate_json(event.model_dump_json()) == event


def test_models_are_frozen() -> None:
    with pytest.raises(ValidationError):
        SOURCE.offset = 7


def test_dead_letter_keeps_the_original_bytes() -> None:
    letter = DeadLetter.for_payload(
        error="empty", detail="d", source=SOURCE, payload=None, failed_at=1.0
    )
    assert letter.payload_b64 == ""
    raw = bytes(range(256))
    letter = DeadLetter.for_payload(
        error="not_utf8", detail="d", source=SOURCE, payload=raw, failed_at=1.0
    )
    assert base64.b64decode(letter.payload_b64) == raw


def test_alert_fingerprint_is_stable_and_distinct() -> None:
    first = alert_fingerprint("pump-1", 100.0)
    assert first == alert_fingerprint("pump-1", 100)  # int and float of one instant agree
    assert len(first) == 32 and int(first, 16) >= 0
    assert first != alert_fingerprint("pump-1", 100.001)
    assert first != alert_fingerprint("pump-2", 100.0)
    # Pinned: changing the recipe would break de-duplication across a rolling upgrade.
    assert first == "d2e556f702fcf58f3e4bbc0ad4f9439e"


@pytest.mark.parametrize(
    "changes",
    [
        {"ends_at": 150.0},  # firing with an end
        {"status": "resolved"},  # resolved without an end
        {"status": "resolved", "ends_at": 50.0},  # ends before it starts
        {"severity": "info"},
        {"n_anomalous": 0},
        {"alert_id": "not-a-fingerprint"},
    ],
)
def test_alert_rejects(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _alert(**changes)


def _batch(n: int = 4, with_features: bool = True) -> dict[str, object]:
    rng = np.random.default_rng(1)
    scores = rng.random(n).astype(np.float32)
    return {
        "keys": [f"k{i}" for i in range(n)],
        "ts": np.arange(n, dtype=np.float64) + 1.7e9,
        "scores": scores,
        "thresholds": np.full(n, 0.5),
        "is_anomaly": scores > 0.5,
        "model_version": "ama-1234",
        "topic": "ama.input",
        "partitions": np.array([0, 1, 0, 2][:n], dtype=np.int32),
        "offsets": np.arange(n, dtype=np.int64) * 10,
        "scored_at": 1.7e9 + 99,
        "top_features": rng.integers(0, 38, size=(n, 3)) if with_features else None,
    }


@pytest.mark.parametrize("with_features", [True, False])
@pytest.mark.parametrize("degraded", [True, False])
def test_fast_serialiser_output_validates_against_the_model(
    with_features: bool, degraded: bool
) -> None:
    batch = _batch(with_features=with_features)
    messages = score_events_json(**batch, degraded=degraded)  # type: ignore[arg-type]
    assert len(messages) == 4
    for i, message in enumerate(messages):
        event = ScoreEvent.model_validate_json(message)
        assert event.key == f"k{i}" and event.degraded is degraded
        assert event.score == float(batch["scores"][i])  # type: ignore[index]
        partition = int(batch["partitions"][i])  # type: ignore[index]
        assert event.source == Source(topic="ama.input", partition=partition, offset=10 * i)
        # Same document pydantic itself would write, field for field.
        assert orjson.loads(message) == orjson.loads(event.model_dump_json())


def test_fast_serialiser_empty_batch() -> None:
    empty = {k: (v[:0] if isinstance(v, np.ndarray | list) else v) for k, v in _batch().items()}
    assert score_events_json(**empty) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"scores": np.array([0.1, np.nan, 0.2, 0.3])},
        {"thresholds": np.array([0.1, np.inf, 0.2, 0.3])},
        {"offsets": np.array([0, -1, 2, 3])},
        {"top_features": np.array([[0], [1], [-2], [3]])},
        {"keys": ["a", "b"]},
        {"topic": ""},
        {"scored_at": float("nan")},
    ],
)
def test_fast_serialiser_refuses_what_the_model_would(changes: dict[str, object]) -> None:
    with pytest.raises(EventError):
        score_events_json(**{**_batch(), **changes})  # type: ignore[arg-type]
