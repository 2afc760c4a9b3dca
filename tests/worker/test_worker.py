"""The worker against the real broker: one output per input offset, DLQ, commit after acks."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_INVALID
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import (
    Topics,
    committed,
    committed_total,
    counter_total,
    make_settings,
    make_worker,
    produce,
    read_topic,
    running,
)
from worker_support import normal_values, sensor_value

from model.detector import AMADetector
from schemas.events import DeadLetter, ScoreEvent
from streamer.probes import ProbeServer

pytestmark = pytest.mark.integration


def test_every_valid_offset_gets_one_score_event_and_every_bad_one_a_dead_letter(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    rows = normal_values(400)
    items: list[tuple[bytes | None, bytes | None]] = [
        (f"m{i % 7}".encode(), sensor_value(f"m{i % 7}", 1000.0 + i, r)) for i, r in enumerate(rows)
    ]
    bad = {b"{nope", b"", b'{"key": "x", "ts": 1, "values": [1, 2]}'}
    items += [(b"bad", value) for value in sorted(bad)]
    produce(kafka_bootstrap, topics.input, items)

    group = group_factory()
    worker = make_worker(
        make_settings(kafka_bootstrap, group, topics, redis_url=redis_url, prefix=redis_prefix),
        detector,
    )
    with running(worker):
        scores = read_topic(kafka_bootstrap, topics.scores, expect=400)
        dead = read_topic(kafka_bootstrap, topics.dlq, expect=3)
        deadline = time.monotonic() + 20
        while committed_total(kafka_bootstrap, group, topics.input) < 403:
            assert time.monotonic() < deadline, "offsets were not committed"
            time.sleep(0.2)

    events = [ScoreEvent.model_validate_json(m.value()) for m in scores]
    per_offset = Counter((e.source.partition, e.source.offset) for e in events)
    assert len(per_offset) == 400 and set(per_offset.values()) == {1}
    assert all(m.key() == e.key.encode() for m, e in zip(scores, events, strict=True))
    letters = [DeadLetter.model_validate_json(m.value()) for m in dead]
    assert len(letters) == 3 and all(m.key() == b"bad" for m in dead)
    assert {base64.b64decode(d.payload_b64) for d in letters} == bad
    assert sorted(d.error for d in letters) == ["empty", "not_json", "wrong_dimension"]
    assert worker.metrics.records_in._value.get() == 403


def test_offsets_are_not_committed_until_the_outputs_are_acknowledged(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    """The scores topic does not exist at first: deliveries fail, so nothing may be committed.
    Once it is created, the worker's re-produce succeeds and only then commits."""
    missing = f"{topics.scores}.late"
    rows = normal_values(50, seed=5)
    produce(
        kafka_bootstrap,
        topics.input,
        [(b"k", sensor_value("k", float(i), r)) for i, r in enumerate(rows)],
    )
    group = group_factory()
    late = Topics(topics.input, missing, topics.alerts, topics.dlq)
    # Unknown topics fail deliveries after 1 s instead of librdkafka's 30 s default.
    settings = make_settings(
        kafka_bootstrap,
        group,
        late,
        redis_url=redis_url,
        prefix=redis_prefix,
        extra={"topic.metadata.propagation.max.ms": "1000"},
    )
    worker = make_worker(settings, detector)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        with running(worker):
            deadline = time.monotonic() + 30
            while not counter_total(worker.metrics.delivery_failures):
                assert time.monotonic() < deadline, "deliveries never failed"
                time.sleep(0.2)
            time.sleep(1.0)
            assert set(committed(kafka_bootstrap, group, topics.input).values()) == {OFFSET_INVALID}
            admin.create_topics([NewTopic(missing, 1, 1)])[missing].result(30)
            scores = read_topic(kafka_bootstrap, missing, expect=50)
            deadline = time.monotonic() + 20
            while committed_total(kafka_bootstrap, group, topics.input) != 50:
                assert time.monotonic() < deadline, "offsets were not committed after recovery"
                time.sleep(0.2)
    finally:
        admin.delete_topics([missing])
    offsets = {ScoreEvent.model_validate_json(m.value()).source.offset for m in scores}
    assert len(offsets) == 50


def test_metrics_and_probes_are_served_over_http(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    detector: AMADetector,
) -> None:
    settings = make_settings(
        kafka_bootstrap,
        group_factory(),
        topics,
        redis_url=redis_url,
        prefix=redis_prefix,
        extra={"statistics.interval.ms": "200"},
    )
    worker = make_worker(settings, detector)
    server = ProbeServer(worker.metrics.probes(), port=0, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    try:
        assert get("/readyz")[0] == 503  # not running yet
        with running(worker):
            produce(
                kafka_bootstrap,
                topics.input,
                [(b"k", sensor_value("k", time.time(), r)) for r in normal_values(50)]
                + [(b"k", b"x")],
            )
            read_topic(kafka_bootstrap, topics.scores, expect=50, settle=0.0)
            time.sleep(0.5)  # one statistics interval, for the lag gauge
            assert get("/healthz")[0] == 200 and get("/readyz")[0] == 200
            status, text = get("/metrics")
    finally:
        server.stop()
    assert status == 200
    for line in (
        "ama_records_in_total 51.0",
        'ama_records_out_total{kind="score"} 50.0',
        'ama_rejects_total{code="not_json"} 1.0',
        f'ama_model_info{{model_version="{detector.model_version}"}} 1.0',
        "ama_end_to_end_seconds_count 50.0",
        'ama_consumer_lag_records{partition="',
        'ama_stage_seconds_count{stage="commit"}',
        "ama_batch_fill_ratio_count",
    ):
        assert line in text, line
