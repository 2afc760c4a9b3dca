"""Misconfiguration fails fast: the worker CLI exits with one clear error line and status 2,
within a bounded time, without ever reporting ready, and every other line it printed is JSON
(librdkafka's included). Real broker, real Redis, the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PrivateRedis, Topics, free_ports

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 3


@pytest.fixture
def guarded_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_ports(1)[0], password="the-right-one")
    server.start()
    yield server
    server.stop()


def worker(
    *args: str, topics: Topics, bundle: Path, env: dict[str, str] | None = None
) -> tuple[int, list[str], float, bool]:
    """Run the worker CLI until it exits; returns its status, stderr lines, seconds taken, and
    whether /readyz ever answered 200 meanwhile."""
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "streamer.cli", "worker", "--model", str(bundle),
            "--input-topic", topics.input, "--scores-topic", topics.scores,
            "--alerts-topic", topics.alerts, "--dlq-topic", topics.dlq,
            "--metrics-port", str(port), *args]  # fmt: skip
    full_env = {
        **os.environ,
        "AMA_WORKER__STARTUP_TIMEOUT_S": str(STARTUP_TIMEOUT_S),
        **(env or {}),
    }
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=full_env, stderr=subprocess.PIPE, text=True)
    ever_ready = False
    while proc.poll() is None and time.monotonic() - started < 90:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                ever_ready = ever_ready or r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr.strip().splitlines(), time.monotonic() - started, ever_ready


def assert_one_error_line(lines: list[str], starts: str) -> None:
    *logs, last = lines
    assert last.startswith(f"error: {starts}"), last
    for line in logs:  # everything else is a JSON log record
        json.loads(line)


def test_a_wrong_redis_password_ends_start_up_at_once(
    kafka_bootstrap: str, guarded_redis: PrivateRedis, topics: Topics, tiny_bundle: Path
) -> None:
    status, lines, seconds, ready = worker(
        "--bootstrap", kafka_bootstrap, "--redis-url", guarded_redis.url,
        topics=topics, bundle=tiny_bundle, env={"AMA_REDIS__PASSWORD": "a-wrong-one"},
    )  # fmt: skip
    assert status == 2 and not ready
    assert_one_error_line(lines, f"Redis at {guarded_redis.url} refused this client")
    assert "a-wrong-one" not in "\n".join(lines)
    print(f"wrong Redis password: exit {status} after {seconds:.1f} s")


def test_an_unreachable_broker_ends_start_up_after_the_timeout(
    redis_url: str, topics: Topics, tiny_bundle: Path
) -> None:
    nobody = f"127.0.0.1:{free_ports(1)[0]}"
    status, lines, seconds, ready = worker(
        "--bootstrap", nobody, "--redis-url", redis_url, topics=topics, bundle=tiny_bundle
    )
    assert status == 2 and not ready
    assert_one_error_line(lines, f"Kafka at {nobody} did not answer within {STARTUP_TIMEOUT_S} s")
    assert seconds < 30
    print(f"unreachable broker: exit {status} after {seconds:.1f} s, {len(lines)} log lines")


def test_sasl_against_a_plaintext_listener_ends_start_up(
    kafka_bootstrap: str, redis_url: str, topics: Topics, tiny_bundle: Path
) -> None:
    sasl = {
        "AMA_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "AMA_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "AMA_KAFKA__SASL_USERNAME": "worker",
        "AMA_KAFKA__SASL_PASSWORD": "not-logged-anywhere",
    }
    status, lines, seconds, ready = worker(
        "--bootstrap", kafka_bootstrap, "--redis-url", redis_url,
        topics=topics, bundle=tiny_bundle, env=sasl,
    )  # fmt: skip
    assert status == 2 and not ready and seconds < 30
    assert_one_error_line(lines, f"Kafka at {kafka_bootstrap}")
    assert "not-logged-anywhere" not in "\n".join(lines)


def test_a_missing_topic_ends_start_up(
    kafka_bootstrap: str, redis_url: str, topics: Topics, tiny_bundle: Path
) -> None:
    typo = Topics("no-such-input-topic", topics.scores, topics.alerts, topics.dlq)
    status, lines, _, ready = worker(
        "--bootstrap", kafka_bootstrap, "--redis-url", redis_url, topics=typo, bundle=tiny_bundle
    )
    assert status == 2 and not ready
    assert_one_error_line(lines, "topic(s) no-such-input-topic do not exist")
