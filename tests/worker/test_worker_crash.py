"""`kill -9` a worker process mid-stream, start it again: every offset is scored at least once,
and exactly once as read_committed consumers see it in exactly-once mode.

The worker runs as the real CLI (`python -m streamer.cli worker`) in a subprocess, so this also
covers flag parsing, start-up, and the SIGTERM drain-commit-close path at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from helpers import Topics, committed_total, produce, read_topic
from worker_support import normal_values, sensor_value

from schemas.events import ScoreEvent

pytestmark = pytest.mark.integration

N = 6000  # plus one record that wakes the worker up
SECRET = "hunter2-not-for-logs"  # unused by PLAINTEXT; must be masked in the logged config


def start_worker(
    bootstrap: str,
    group: str,
    topics: Topics,
    bundle: Path,
    redis_url: str,
    prefix: str,
    log: Path,
    runner: str,
    guarantee: str,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        # The broker's minimum session timeout, so the killed member leaves the group in ~6 s.
        "AMA_KAFKA__EXTRA": json.dumps({"session.timeout.ms": "6000", "sasl.password": SECRET}),
    }
    argv = [
        sys.executable,
        "-m",
        "streamer.cli",
        "worker",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--input-topic",
        topics.input,
        "--scores-topic",
        topics.scores,
        "--alerts-topic",
        topics.alerts,
        "--dlq-topic",
        topics.dlq,
        "--model",
        str(bundle),
        "--device",
        "cpu",
        "--redis-url",
        redis_url,
        "--redis-prefix",
        prefix,
        "--max-records",
        "128",
        "--metrics-port",
        "0",
        "--runner",
        runner,
        "--guarantee",
        guarantee,
    ]
    return subprocess.Popen(argv, env=env, stderr=log.open("ab"), stdout=subprocess.DEVNULL)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@pytest.mark.parametrize(
    ("runner", "guarantee"),
    [("confluent", "at-least-once"), ("faust", "at-least-once"), ("confluent", "exactly-once")],
)
def test_kill_9_mid_stream_then_restart_scores_every_offset(
    runner: str,
    guarantee: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    group = group_factory()
    log = tmp_path / "worker.log"
    rows = normal_values(N + 1, seed=11)
    items = [
        (f"m{i % 8}".encode(), sensor_value(f"m{i % 8}", float(i), r)) for i, r in enumerate(rows)
    ]

    def feed() -> None:  # faster than one worker scores, so the kill lands mid-batch
        for start in range(1, N + 1, 500):
            produce(kafka_bootstrap, topics.input, items[start : start + 500])
            time.sleep(0.05)

    def done() -> int:
        try:
            return committed_total(kafka_bootstrap, group, topics.input)
        except KafkaException:  # exactly-once: the killed worker's transaction is still open
            return -1

    args = (kafka_bootstrap, group, topics, tiny_bundle, redis_url, redis_prefix, log, runner,
            guarantee)  # fmt: skip
    worker = start_worker(*args)
    feeder = threading.Thread(target=feed)
    try:
        produce(kafka_bootstrap, topics.input, items[:1])  # wakes the worker up
        wait_until(lambda: done() >= 1, "the first worker to commit")
        feeder.start()
        wait_until(lambda: done() >= N // 4, "a quarter of the stream")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed_at = done()
        worker = start_worker(*args)
        feeder.join()
        wait_until(lambda: done() >= N + 1, "the restarted worker to catch up")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        if feeder.is_alive():
            feeder.join()

    scores = read_topic(kafka_bootstrap, topics.scores, expect=N + 1, settle=2.0)
    per_offset = Counter(
        (e.source.partition, e.source.offset)
        for e in (ScoreEvent.model_validate_json(m.value()) for m in scores)
    )
    assert len(per_offset) == N + 1, "an input offset was never scored"
    duplicates = sum(per_offset.values()) - len(per_offset)
    print(f"{runner}, {guarantee}: kill -9 at {killed_at} committed of {N + 1}: "
          f"{duplicates} duplicates")  # fmt: skip
    if guarantee == "exactly-once":  # read_topic reads committed transactions only
        assert duplicates == 0
    logged = log.read_text()
    # the SIGTERM path drained and closed
    assert ("worker stopped" if runner == "confluent" else "faust runner stopped") in logged
    assert "effective configuration" in logged and SECRET not in logged
