"""`ama-stream dashboard` as an operator runs it: it serves the page and its vendored files,
answers its probes, stops cleanly on SIGTERM, never commits an offset, and a misconfiguration
ends it at once with one line and exit status 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from helpers import Topics, committed, free_ports, produce

pytestmark = pytest.mark.integration


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer.cli", "dashboard", *args, "--log-level", "ERROR"]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):  # not listening yet
        return 0, b""


def test_the_command_serves_the_page_and_commits_nothing(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
) -> None:
    produce(kafka_bootstrap, topics.scores, [(b"k", b'{"not": "a score event"}')])
    port, group = free_ports(1)[0], group_factory()
    argv = _cli("--bootstrap", kafka_bootstrap, "--redis-url", redis_url, "--redis-prefix",
                redis_prefix, "--group", group, "--input-topic", topics.input, "--scores-topic",
                topics.scores, "--alerts-topic", topics.alerts, "--dlq-topic", topics.dlq,
                "--port", str(port))  # fmt: skip
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get(base + "/readyz")[0] != 200:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the dashboard never became ready"
            time.sleep(0.2)
        status, page = _get(base + "/")
        assert status == 200 and b"/static/vendor/uPlot.iife.min.js" in page
        for path in ("/static/app.js", "/static/app.css", "/static/vendor/uPlot.iife.min.js",
                     "/static/vendor/uPlot.min.css"):  # fmt: skip
            status, body = _get(base + path)
            assert status == 200 and body, path
        assert b"cdn" not in page.lower() and b"https://" not in page
        assert _get(base + "/healthz")[0] == 200
        deadline = time.monotonic() + 30
        while (fleet := json.loads(_get(base + "/api/fleet")[1]))["read"]["scores"] < 1:
            assert time.monotonic() < deadline, "the produced message was never read"
            time.sleep(0.2)
        assert fleet["skipped"] == 1 and fleet["keys"] == 0  # not a score event: skipped
        assert fleet["group"] == group and [p["partition"] for p in fleet["partitions"]] == [
            0, 1, 2, 3,
        ]  # fmt: skip
        assert _get(base + "/api/key?key=nobody")[0] == 404
        # torch stays out: the dashboard reads the registry, never a model (600 MB resident)
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" not in maps and "confluent_kafka" in maps
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        assert code == 0, process.stderr.read() if process.stderr else ""
    dashboard_group = "ama-stream-dashboard"  # the default dashboard.group_id
    for topic in (topics.scores, topics.alerts):
        assert set(committed(kafka_bootstrap, dashboard_group, topic).values()) == {-1001}
    assert set(committed(kafka_bootstrap, group, topics.input).values()) == {-1001}
    assert _members(kafka_bootstrap, group) == []  # it asked about the workers' group only


def _members(bootstrap: str, group: str) -> list:
    """The group's members; a fresh client per try, since a describe request has been seen to
    go unanswered once on this broker (librdkafka's coordinator lookup)."""
    for _ in range(3):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        future = admin.describe_consumer_groups([group], request_timeout=10)[group]
        try:
            return list(future.result(15).members)
        except TimeoutError:
            continue
    raise AssertionError(f"describing group {group} never answered")


def test_a_missing_topic_ends_the_command_with_one_line(
    kafka_bootstrap: str, redis_url: str, topics: Topics
) -> None:
    argv = _cli("--bootstrap", kafka_bootstrap, "--redis-url", redis_url, "--input-topic",
                topics.input, "--scores-topic", "no.such.topic", "--alerts-topic", topics.alerts,
                "--dlq-topic", topics.dlq, "--port", "0")  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: topic(s) no.such.topic do not exist on {kafka_bootstrap}: create them with "
        "`ama-stream topics create`"
    ]


def test_a_taken_port_ends_the_command_with_one_line() -> None:
    port = free_ports(1)[0]
    with socket.socket() as held:
        held.bind(("0.0.0.0", port))
        held.listen()
        done = subprocess.run(_cli("--port", str(port)), capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: dashboard port {port} cannot be bound (Address already in use); set another "
        "with --port or AMA_DASHBOARD__PORT (0 = any free port)"
    ]
