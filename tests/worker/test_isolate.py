"""Processing errors never stop the pipeline: the records that make the core raise are found by
splitting the batch and dead-lettered with the exception; a record the model scores NaN is a
dead letter of its own; a service error is not the records' fault and is not split."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import Topics as WorkerTopics
from helpers import committed_total, make_settings, make_worker, produce, read_topic, running
from worker_support import FloorVerdicts, normal_values, sensor_value

from model.detector import AMADetector
from schemas.errors import ServiceError
from schemas.events import DeadLetter, ScoreEvent
from streamer.worker.batch import RawBatch, RawMessage, Topics
from streamer.worker.isolate import process_isolating
from streamer.worker.pipeline import BatchResult, process_batch

TOPICS = Topics(scores="scores", alerts="alerts", dlq="dlq")
POISON, UNSCORABLE = 777.0, 666.0  # first readings the sabotaged model chokes on


class Sabotaged:
    """The real detector, except that a batch holding a row whose first reading is POISON
    raises, and a row whose first reading is UNSCORABLE scores NaN."""

    def __init__(self, detector: AMADetector) -> None:
        self._detector = detector
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def score_with_features(self, x: np.ndarray, top_k: int) -> tuple[np.ndarray, Any]:
        self.calls += 1
        if (x[:, 0] == POISON).any():
            raise RuntimeError("poisoned input")
        scores, features = self._detector.score_with_features(x, top_k)
        scores[x[:, 0] == UNSCORABLE] = np.nan
        return scores, features


def batch_of(rows: np.ndarray) -> RawBatch:
    return RawBatch.of(
        [
            RawMessage("in", 0, 500 + i, b"k", sensor_value("k", 1000.0 + i, row))
            for i, row in enumerate(rows)
        ]
    )


def run(detector: Any, raw: RawBatch, **kwargs: Any) -> BatchResult:
    process: Callable[[RawBatch], BatchResult] = lambda piece: process_batch(  # noqa: E731
        piece, detector=detector, verdicts=FloorVerdicts(), topics=TOPICS, max_bytes=100_000
    )
    return process_isolating(raw, process, dlq_topic="dlq", model_version="v1", **kwargs)


def test_poison_records_become_dead_letters_and_the_rest_is_scored(
    detector: AMADetector,
) -> None:
    rows = normal_values(32, seed=4)
    rows[5, 0] = rows[21, 0] = POISON
    rows[12, 0] = UNSCORABLE
    sabotaged = Sabotaged(detector)

    result = run(sabotaged, batch_of(rows))

    letters = {
        DeadLetter.model_validate_json(m.value).source.offset: DeadLetter.model_validate_json(
            m.value
        )
        for m in result.messages
        if m.kind == "dead_letter"
    }
    assert {o: d.error for o, d in letters.items()} == {
        505: "processing_error", 512: "non_finite_score", 521: "processing_error",
    }  # fmt: skip
    assert letters[505].detail == "RuntimeError: poisoned input"
    events = [ScoreEvent.model_validate_json(m.value) for m in result.messages if m.kind == "score"]
    assert [e.source.offset for e in events] == [
        500 + i for i in range(32) if i not in (5, 12, 21)
    ]  # every other record scored, still in offset order
    assert result.n_in == 32 and result.rejects == {"processing_error": 2, "non_finite_score": 1}
    assert sabotaged.calls <= 2 * 2 * 5 + 1  # about 2 log2(n) extra calls per poison record


def test_a_service_error_is_raised_not_split(detector: AMADetector) -> None:
    class DeviceGone(Sabotaged):
        def score_with_features(self, x: np.ndarray, top_k: int) -> tuple[np.ndarray, Any]:
            self.calls += 1
            raise ServiceError("cuda:0 is out of memory")

    gone = DeviceGone(detector)
    with pytest.raises(ServiceError):
        run(gone, batch_of(normal_values(16, seed=5)))
    assert gone.calls == 1


def test_on_error_stop_raises_instead(detector: AMADetector) -> None:
    rows = normal_values(8, seed=6)
    rows[2, 0] = POISON
    with pytest.raises(RuntimeError, match="poisoned"):
        run(Sabotaged(detector), batch_of(rows), on_error="stop")


@pytest.mark.integration
def test_a_poison_record_in_a_stream_goes_to_the_dlq_and_the_worker_goes_on(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: WorkerTopics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    rows = normal_values(200, seed=9)
    rows[77, 0] = POISON
    items = [(b"k", sensor_value("k", 1000.0 + i, row)) for i, row in enumerate(rows)]
    produce(kafka_bootstrap, topics.input, items)
    group = group_factory()
    settings = make_settings(
        kafka_bootstrap, group, topics, redis_url=redis_url, prefix=redis_prefix
    )
    worker = make_worker(settings, Sabotaged(detector))  # type: ignore[arg-type]
    with running(worker):
        scores = read_topic(kafka_bootstrap, topics.scores, expect=199)
        (letter,) = read_topic(kafka_bootstrap, topics.dlq, expect=1)
        deadline = time.monotonic() + 20
        while committed_total(kafka_bootstrap, group, topics.input) < 200:
            assert time.monotonic() < deadline, "offsets not committed past the poison record"
            time.sleep(0.2)
    body = DeadLetter.model_validate_json(letter.value())
    assert (body.error, body.detail) == ("processing_error", "RuntimeError: poisoned input")
    assert len({ScoreEvent.model_validate_json(m.value()).source.offset for m in scores}) == 199
