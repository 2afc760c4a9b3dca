"""Every job against a broker that demands SASL_SSL/SCRAM-SHA-512 and a Redis that demands an
ACL user over TLS, configured as docs/operations.md ("Security") says: the happy path end to
end, then a wrong password and an untrusted certificate, each of which must end the process
with one clear line within a bounded time, never ready. The real CLI in subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from helpers import free_ports
from secure_stack import PASSWORD, SecureKafka, SecureRedis

from streamer.state.client import connect

pytestmark = pytest.mark.integration

TOPICS = ["sec.in", "sec.scores", "sec.alerts", "sec.dlq"]
BOUND_S = 30.0  # a refusal must end a command well within this (start-up timeout: 20 s)
ROWS = 300


def _env(*parts: dict[str, str]) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
           "PYTHONPATH": str(Path.cwd()), "AMA_WORKER__STARTUP_TIMEOUT_S": "20",
           "AMA_KAFKA__INPUT_TOPIC": TOPICS[0], "AMA_KAFKA__SCORES_TOPIC": TOPICS[1],
           "AMA_KAFKA__ALERTS_TOPIC": TOPICS[2], "AMA_KAFKA__DLQ_TOPIC": TOPICS[3]}  # fmt: skip
    for part in parts:
        env.update(part)
    return env


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamer.cli", *args]


@pytest.fixture(scope="module")
def secure_topics(secure_kafka: SecureKafka) -> list[str]:
    secure_kafka.create_topics(TOPICS)
    return TOPICS


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    np.save(path, np.random.default_rng(3).normal(size=(ROWS, 38)).astype(np.float32))
    return path


def _read(broker: SecureKafka, topic: str, expect: int, timeout_s: float = 60) -> int:
    consumer = Consumer({**broker.client_config(), "group.id": "sec-reader"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, deadline = 0, time.monotonic() + timeout_s
    try:
        while got < expect and time.monotonic() < deadline:
            got += sum(m.error() is None for m in consumer.consume(500, timeout=0.5))
    finally:
        consumer.close()
    return got


def test_every_job_works_over_sasl_ssl_and_an_acl_user_over_tls(
    secure_kafka: SecureKafka,
    secure_topics: list[str],
    tls_redis: SecureRedis,
    tiny_bundle: Path,
    rows: Path,
    tmp_path: Path,
) -> None:
    """worker + produce + model publish + retrain + dashboard, all with the secure settings.
    produce reads them from a YAML file (the password in it), the others from the environment.
    Nothing any of them prints, nor the worker's /metrics, contains a secret."""
    env = _env(secure_kafka.env(), tls_redis.env(), {"AMA_RETRAIN__STORE": str(tmp_path / "m")})
    printed: list[str] = []
    published = subprocess.run(
        _cli("model", "publish", "--bundle", str(tiny_bundle)),
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    printed += [published.stdout, published.stderr]

    port = free_ports(1)[0]
    worker = subprocess.Popen(_cli("worker", "--metrics-port", str(port)), env=env,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _ready(port):
            assert worker.poll() is None, worker.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.3)
        config = tmp_path / "kafka.yaml"
        kafka = {k.removeprefix("AMA_KAFKA__").lower(): v for k, v in secure_kafka.env().items()}
        config.write_text(json.dumps({"kafka": kafka}))  # JSON is YAML
        produced = subprocess.run(
            _cli("produce", "--data", str(rows), "--topic", TOPICS[0], "--config", str(config),
                 "--keys", "3"),
            env=_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        printed += [produced.stdout, produced.stderr]
        assert _read(secure_kafka, TOPICS[1], ROWS) == ROWS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            printed.append(page.read().decode())
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr[-3000:]
    printed.append(stderr)
    admin = tls_redis.admin()
    assert len(list(admin.scan_iter(match="ama:*:stats:*"))) == 3  # judged under the ACL user

    retrain = subprocess.run(_cli("retrain", "--once", "--window", "1h"), env=env,
                             capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert retrain.returncode == 0 and "decision: skipped" in retrain.stdout, retrain.stderr[-3000:]
    printed += [retrain.stdout, retrain.stderr]

    port = free_ports(1)[0]
    dashboard = subprocess.Popen(_cli("dashboard", "--port", str(port)), env=env,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            assert dashboard.poll() is None, dashboard.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the dashboard never became ready"
            time.sleep(0.3)
    finally:
        dashboard.send_signal(signal.SIGTERM)
        printed.append(dashboard.communicate(timeout=60)[1])
    assert "**********" in printed[-1]  # the effective configuration, secrets masked
    leaks = [text for text in printed if PASSWORD in text]
    assert not leaks, "a secret was printed"


JOBS = {
    "worker": ["worker", "--metrics-port", "{port}"],
    "produce": ["produce", "--data", "{rows}", "--topic", TOPICS[0]],
    "retrain": ["retrain", "--once"],
    "dashboard": ["dashboard", "--port", "{port}"],
}
FAULTS = {
    "kafka-wrong-password": ("kafka", "Kafka at 127.0.0.1:{kport} refused this client"),
    "kafka-untrusted-certificate": ("kafka", "Kafka at 127.0.0.1:{kport} refused this client"),
    "redis-wrong-password": ("redis", "Redis at rediss://ama@127.0.0.1:{rport}/0 refused"),
    "redis-untrusted-certificate": ("redis", "Redis at rediss://ama@127.0.0.1:{rport}/0 refused"),
}


@pytest.mark.parametrize(
    ("job", "fault"),
    [(j, f) for j in JOBS for f in FAULTS if not (j == "produce" and f.startswith("redis"))],
)
def test_a_refused_login_ends_every_job_in_one_line(
    job: str,
    fault: str,
    secure_kafka: SecureKafka,
    secure_topics: list[str],
    tls_redis: SecureRedis,
    tiny_bundle: Path,
    rows: Path,
    tmp_path: Path,
) -> None:
    service, expected = FAULTS[fault]
    wrong = "wrong-password" in fault
    kafka = secure_kafka.env(
        password="not-the-password" if wrong and service == "kafka" else PASSWORD,
        ca="other-ca.pem" if not wrong and service == "kafka" else "ca.pem",
    )
    red = tls_redis.env(
        password="not-the-password" if wrong and service == "redis" else PASSWORD,
        ca="other-ca.pem" if not wrong and service == "redis" else "ca.pem",
    )
    port = free_ports(1)[0]
    argv = [a.format(port=port, rows=rows) for a in JOBS[job]]
    env = _env(kafka, red, {"AMA_MODEL__BUNDLE": str(tiny_bundle),
                            "AMA_RETRAIN__STORE": str(tmp_path)})  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(_cli(*argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    ever_ready = False
    while proc.poll() is None and time.monotonic() - started < BOUND_S + 30:
        ever_ready = ever_ready or _ready(port)
        time.sleep(0.2)
    proc.kill()
    _, stderr = proc.communicate(timeout=30)
    seconds = time.monotonic() - started
    lines = stderr.strip().splitlines()
    where = expected.format(kport=secure_kafka.port, rport=tls_redis.port)
    assert proc.returncode not in (0, None, -9) and not ever_ready, (proc.returncode, lines[-3:])
    assert lines and lines[-1].startswith(f"error: {where}"), lines[-3:]
    for line in lines[:-1]:
        json.loads(line)  # everything before the one error line is a JSON log record
    assert seconds < BOUND_S, seconds
    assert "not-the-password" not in stderr and PASSWORD not in stderr
    print(f"{job} / {fault}: exit {proc.returncode} after {seconds:.1f} s: {lines[-1][:160]}")


def test_the_acl_user_is_confined_to_its_prefix_and_commands(acl_redis: SecureRedis) -> None:
    """The documented ACL rule: the jobs' commands on ``ama:*`` keys, nothing else."""
    client = connect(acl_redis.url, password=PASSWORD)
    client.set("ama:probe", b"1")
    assert client.get("ama:probe") == b"1"
    refused = [
        ("GET", "other:key"),
        ("SET", "other:key", "1"),
        ("FLUSHALL",),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("CONFIG", "SET", "maxmemory", "1"),
        ("ACL", "LIST"),
        ("SHUTDOWN",),
    ]
    for command in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    # A script may only touch the keys it declares, and those only under the prefix.
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.eval("return redis.call('GET', KEYS[1])", 1, "other:key")
    with pytest.raises(redis.exceptions.ResponseError):
        client.eval("return redis.call('FLUSHALL')", 0)
