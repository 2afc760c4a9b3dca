"""The pipeline core without a broker: one batch of raw messages in, messages to produce out."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import orjson
from helpers import DIM
from worker_support import FloorVerdicts, normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import DLQ_MAX_PAYLOAD, DeadLetter, ScoreEvent
from streamer.worker.batch import RawMessage, Topics
from streamer.worker.pipeline import process_batch

TOPICS = Topics(scores="scores", alerts="alerts", dlq="dlq")


def raw(values: list[bytes | None], topic: str = "in", partition: int = 0) -> list[RawMessage]:
    return [
        RawMessage(topic, partition, 100 + i, f"k{i}".encode(), v) for i, v in enumerate(values)
    ]


def test_one_score_event_per_valid_record_and_one_dead_letter_per_reject(
    detector: AMADetector,
) -> None:
    rows = normal_values(5)
    rows[3] = 8.0  # an obvious outlier
    values: list[bytes | None] = [sensor_value(f"m{i}", 1000.0 + i, r) for i, r in enumerate(rows)]
    values.insert(2, b"{not json")
    values.append(None)  # a tombstone
    values.append(orjson.dumps({"key": "m", "ts": 1.0, "values": [1.0, 2.0]}))
    messages = raw(values)

    result = process_batch(
        messages, detector=detector, verdicts=FloorVerdicts(), topics=TOPICS, max_bytes=100_000
    )

    dead = [m for m in result.messages if m.kind == "dead_letter"]
    scores = [m for m in result.messages if m.kind == "score"]
    assert result.n_in == 8 and result.n_valid == 5 and len(scores) == 5
    assert dict(result.rejects) == {"not_json": 1, "empty": 1, "wrong_dimension": 1}
    letters = {DeadLetter.model_validate_json(m.value).source.offset: m for m in dead}
    assert sorted(letters) == [102, 106, 107]
    bad = letters[102]
    assert bad.topic == "dlq" and bad.key == b"k2"  # keyed by the original key
    body = DeadLetter.model_validate_json(bad.value)
    assert body.error == "not_json" and base64.b64decode(body.payload_b64) == b"{not json"
    assert dict(bad.headers or [])["ama.error"] == b"not_json"

    events = [ScoreEvent.model_validate_json(m.value) for m in scores]
    assert [e.source.offset for e in events] == [100, 101, 103, 104, 105]
    assert [m.key for m in scores] == [f"m{i}".encode() for i in range(5)]
    assert all(e.model_version == detector.model_version for e in events)
    assert all(e.top_features is not None and len(e.top_features) == 3 for e in events)
    outlier = events[3]
    assert outlier.is_anomaly and outlier.score == max(e.score for e in events)
    assert np.allclose([e.score for e in events], detector.score(rows))


def test_an_all_bad_batch_scores_nothing_and_asks_no_verdicts(detector: AMADetector) -> None:
    verdicts = FloorVerdicts()
    result = process_batch(
        raw([b"", b"[]"]), detector=detector, verdicts=verdicts, topics=TOPICS, max_bytes=100_000
    )
    assert [m.kind for m in result.messages] == ["dead_letter", "dead_letter"]
    assert verdicts.calls == 0 and result.n_valid == 0


def test_records_from_two_topics_keep_their_own_source(detector: AMADetector) -> None:
    rows = normal_values(4, seed=3)
    messages = raw([sensor_value("a", 1.0, rows[0]), sensor_value("a", 2.0, rows[1])], topic="x")
    messages += raw([sensor_value("b", 3.0, rows[2])], topic="y", partition=2)
    result = process_batch(
        messages, detector=detector, verdicts=FloorVerdicts(), topics=TOPICS, max_bytes=100_000
    )
    sources = [ScoreEvent.model_validate_json(m.value).source for m in result.messages]
    assert [(s.topic, s.partition) for s in sources] == [("x", 0), ("x", 0), ("y", 2)]


def test_oversized_values_are_rejected_not_parsed(detector: AMADetector) -> None:
    value = sensor_value("k", 1.0, np.zeros(DIM, dtype=np.float32))
    result = process_batch(
        raw([value]),
        detector=detector,
        verdicts=FloorVerdicts(),
        topics=TOPICS,
        max_bytes=len(value) - 1,
    )
    assert dict(result.rejects) == {"oversized": 1}


def test_a_huge_bad_payload_is_cut_in_its_dead_letter_with_its_size_and_hash(
    detector: AMADetector,
) -> None:
    value = b"x" * (DLQ_MAX_PAYLOAD + 10)
    result = process_batch(
        raw([value]),
        detector=detector,
        verdicts=FloorVerdicts(),
        topics=TOPICS,
        max_bytes=2 * len(value),
    )
    (letter,) = result.messages
    body = DeadLetter.model_validate_json(letter.value)
    assert base64.b64decode(body.payload_b64) == value[:DLQ_MAX_PAYLOAD]
    assert body.payload_truncated and len(letter.value) < 1_000_000
    assert body.payload_bytes == len(value)
    assert body.payload_sha256 == hashlib.sha256(value).hexdigest()  # of the whole original
    headers = dict(letter.headers or [])
    assert headers["ama.payload.bytes"] == str(len(value)).encode()
    assert headers["ama.payload.sha256"] == body.payload_sha256.encode()
    assert headers["ama.payload.truncated"] == b"1"
