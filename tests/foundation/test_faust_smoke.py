"""faust-streaming (aiokafka) works against the same broker version as confluent-kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.integration

RELAY = Path(__file__).with_name("faust_relay.py")


def test_faust_agent_reads_one_topic_and_writes_another(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    source, sink = topic_factory("faust-in"), topic_factory("faust-out")
    env = {
        **os.environ,
        "RELAY_APP_ID": group_factory(),
        "RELAY_BOOTSTRAP": kafka_bootstrap,
        "RELAY_SOURCE": source,
        "RELAY_SINK": sink,
    }
    log = (tmp_path / "faust.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, str(RELAY), "worker", "--loglevel", "warn"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group_factory(),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([sink])
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for i in range(5):
            producer.produce(source, value=f"reading-{i}".encode())
        assert producer.flush(30) == 0
        received: list[bytes] = []
        deadline = time.monotonic() + 90
        while len(received) < 5 and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "faust.log").read_text()
            received += [m.value() for m in consumer.consume(10, timeout=1.0) if not m.error()]
    finally:
        consumer.close()
        worker.terminate()
        worker.wait(timeout=30)
    assert sorted(received) == [f"READING-{i}".encode() for i in range(5)], (
        tmp_path / "faust.log"
    ).read_text()
