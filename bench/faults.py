"""Fault runs behind the failure-semantics figures of docs/worker.md, against real services.

    python -m bench.faults [--data-dir ../shared/data/smd] [--only redis-outage,...]

Needs the local stack (`ama-stream local up`); starts its own private Redis, broker and
workers where a scenario breaks them, and prints one table per scenario. Not part of the test
suite (minutes, and timings that depend on the machine); the tests assert the behaviour, this
measures it.

Scenarios:
- ``startup``: the worker CLI with a wrong Redis password, an unreachable broker, SASL against
  a plaintext listener: exit status, seconds until exit, whether /readyz ever said 200.
- ``redis-outage``: labelled server telemetry (SMD machine-2-7) replayed through a worker while
  its Redis hangs for 15 s and is then killed and restarted empty; alert episodes against a run
  of the same records without the fault, and how late the alerts of incidents that began during
  the outage came.
- ``kill``: two CLI workers share a 4-partition topic under load; one is killed with SIGKILL;
  how long its partitions go without a new score event.
- ``broker-outage``: a CLI worker whose private broker stops for 10 s: lines on its stderr that
  are not JSON (raw librdkafka output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from model.commands import train_cached
from schemas.settings import Settings, load_settings
from streamer.devtools.demo import MODEL, load_demo_data
from streamer.devtools.local_stack import LocalStack, default_state_dir
from streamer.devtools.replay import replay
from streamer.worker.assemble import build_worker

BOOTSTRAP, REDIS_URL = "127.0.0.1:9092", "redis://127.0.0.1:6379/0"
CLI = [sys.executable, "-m", "streamer.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _topics(bootstrap: str, partitions: int = 4) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    names = {k: f"faults.{run}.{k}" for k in ("input", "scores", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(t, partitions if k == "input" else 1, 1) for k, t in names.items()]
    for future in admin.create_topics(new).values():
        future.result(30)
    return names


def _read(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[tuple[float, bytes]]:
    """(broker timestamp in s, value) of every message, until nothing new for ``idle_s``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-reader"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[tuple[float, bytes]] = []
    last = time.monotonic()
    while time.monotonic() - last < idle_s:
        for m in consumer.consume(1000, timeout=0.5):
            if m.error() is None:
                out.append((m.timestamp()[1] / 1000, m.value() or b""))
                last = time.monotonic()
    consumer.close()
    return out


# --- startup -------------------------------------------------------------------------------


def _worker_cli(args: list[str], env: dict[str, str], topics: dict[str, str], bundle: Path):
    port = _free_port()
    argv = [*CLI, "worker", "--model", str(bundle), "--metrics-port", str(port),
            "--input-topic", topics["input"], "--scores-topic", topics["scores"],
            "--alerts-topic", topics["alerts"], "--dlq-topic", topics["dlq"], *args]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
    ready = False
    while proc.poll() is None and time.monotonic() - started < 120:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                ready = ready or r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - started, ready, err.strip().splitlines()


def startup(bundle: Path) -> None:
    topics = _topics(BOOTSTRAP)
    port = _free_port()
    guarded = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
         "--requirepass", "right"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    sasl = {"AMA_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "AMA_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512", "AMA_KAFKA__SASL_USERNAME": "u",
            "AMA_KAFKA__SASL_PASSWORD": "p"}  # fmt: skip
    cases = {
        "wrong Redis password": (["--bootstrap", BOOTSTRAP, "--redis-url",
                                  f"redis://127.0.0.1:{port}/0"], {"AMA_REDIS__PASSWORD": "wrong"}),
        "unreachable broker": (["--bootstrap", f"127.0.0.1:{_free_port()}",
                                "--redis-url", REDIS_URL], {}),
        "SASL against a plaintext listener": (["--bootstrap", BOOTSTRAP, "--redis-url",
                                               REDIS_URL], sasl),
    }  # fmt: skip
    print("| fault | exit status | seconds to exit | /readyz ever 200 | last line |")
    print("|---|---:|---:|---|---|")
    try:
        for name, (args, env) in cases.items():
            status, seconds, ready, lines = _worker_cli(args, env, topics, bundle)
            print(f"| {name} | {status} | {seconds:.1f} | {ready} | `{lines[-1][:90]}` |")
    finally:
        guarded.terminate()


# --- redis outage --------------------------------------------------------------------------


@contextmanager
def _worker_thread(settings: Settings) -> Iterator[None]:
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join(60)


def _episodes(alerts: list[tuple[float, bytes]]) -> dict[str, tuple[float, float]]:
    """alert_id -> (starts_at, broker time of its first firing event)."""
    out: dict[str, tuple[float, float]] = {}
    for at, value in alerts:
        a = json.loads(value)
        if a["status"] == "firing" and a["alert_id"] not in out:
            out[a["alert_id"]] = (a["starts_at"], at)
    return out


# The outage run times how late each episode fires: it fires on an episode's first anomalous
# record, so that lateness is the outage's alone and not the alert rule's persistence.
FIRST_RECORD_FIRES = {
    "AMA_ALERTS__N_ANOMALOUS": "1",
    "AMA_ALERTS__WINDOW_M": "1",
    "AMA_ALERTS__QUIET_RECORDS": "60",
}


def redis_outage(data_dir: Path | None, rate: float) -> None:
    data = load_demo_data("machine-2-7", data_dir)
    bundle = train_cached(data.train, default_state_dir().parent / "demo", data.machine,
                          epochs=10, config=MODEL)  # fmt: skip
    rows, keys = data.test, [data.machine] * len(data.test)
    os.environ.update({k: v for k, v in FIRST_RECORD_FIRES.items() if k not in os.environ})
    runs = {}
    for fault in (False, True):
        topics = _topics(BOOTSTRAP)
        port = _free_port()
        server = _redis_server(port)
        settings = load_settings(
            kafka={"bootstrap": BOOTSTRAP, "group_id": f"faults-{uuid.uuid4().hex[:6]}",
                   "input_topic": topics["input"], "scores_topic": topics["scores"],
                   "alerts_topic": topics["alerts"], "dlq_topic": topics["dlq"]},
            redis={"url": f"redis://127.0.0.1:{port}/0"},
            model={"bundle": bundle, "device": "cpu"}, metrics={"port": 0},
        )  # fmt: skip
        with _worker_thread(settings):
            feeder = threading.Thread(
                target=replay, args=({"bootstrap.servers": BOOTSTRAP}, topics["input"], rows),
                kwargs={"kind": "vector", "keys": keys, "rate": rate}, daemon=True,
            )  # fmt: skip
            began = time.time()
            feeder.start()
            outage = (0.0, 0.0)
            if fault:
                time.sleep(len(rows) / rate / 4)
                start = time.time() - began
                server.send_signal(signal.SIGSTOP)  # hangs: every call times out
                time.sleep(15)
                server.kill()  # then dies, and comes back empty
                server.wait()
                server = _redis_server(port)
                outage = (start, time.time() - began)
            feeder.join()
            alerts = _read(BOOTSTRAP, topics["alerts"], idle_s=15.0)
        server.terminate()
        # Episodes by the time into the replay their first record was sent.
        runs[fault] = ({k: (s - began, f - began) for k, (s, f) in _episodes(alerts).items()},
                       outage)  # fmt: skip
    reference, _ = runs[False]
    faulted, (t0, t1) = runs[True]

    def begun_during(episodes: dict[str, tuple[float, float]]) -> list[float]:
        return [fired - start for start, fired in episodes.values() if t0 <= start <= t1]

    late, usual = begun_during(faulted), begun_during(reference)
    print(f"records: {len(rows)} ({data.source}), replayed at {rate:.0f}/s; Redis hung 15 s from "
          f"{t0:.0f} s into the replay, then killed and restarted empty")  # fmt: skip
    print("| run | alert episodes | episodes beginning in the outage | alert delay of those |")
    print("|---|---:|---:|---|")
    for name, episodes, delays in (("no fault", reference, usual),
                                   ("Redis hung + killed", faulted, late)):  # fmt: skip
        spread = (f"median {statistics.median(delays):.1f} s, max {max(delays):.1f} s"
                  if delays else "-")  # fmt: skip
        print(f"| {name} | {len(episodes)} | {len(delays)} | {spread} |")


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return server


# --- kill ----------------------------------------------------------------------------------


def kill(bundle: Path, rate: float) -> None:
    topics = _topics(BOOTSTRAP)
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    group = f"faults-{uuid.uuid4().hex[:6]}"
    argv = [*CLI, "worker", "--bootstrap", BOOTSTRAP, "--group", group, "--model", str(bundle),
            "--redis-url", REDIS_URL, "--redis-prefix", prefix, "--metrics-port", "0",
            "--input-topic", topics["input"], "--scores-topic", topics["scores"],
            "--alerts-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
            "--log-level", "WARNING"]  # fmt: skip
    workers = [subprocess.Popen(argv, stderr=subprocess.DEVNULL) for _ in range(2)]
    rows = np.random.default_rng(0).normal(size=(int(rate * 40), 38)).astype(np.float32)
    keys = [f"k{i % 16}" for i in range(len(rows))]
    feeder = threading.Thread(
        target=replay, args=({"bootstrap.servers": BOOTSTRAP}, topics["input"], rows),
        kwargs={"kind": "vector", "keys": keys, "rate": rate}, daemon=True,
    )  # fmt: skip
    time.sleep(8)  # both joined
    feeder.start()
    time.sleep(15)
    killed_at = time.time()
    workers[0].send_signal(signal.SIGKILL)
    feeder.join()
    events = _read(BOOTSTRAP, topics["scores"], idle_s=5.0)
    for w in workers[1:]:
        w.send_signal(signal.SIGTERM)
        w.wait(60)
    # Per partition, the longest wait for a score event after the kill.
    last: dict[int, float] = {}
    gaps: dict[int, float] = {}
    for at, value in events:
        p = json.loads(value)["source"]["partition"]
        if p in last and at > killed_at - 1:
            gaps[p] = max(gaps.get(p, 0.0), at - max(last[p], killed_at))
        last[p] = at
    print("| partition | longest time without a score event after the kill (s) |")
    print("|---:|---:|")
    for p in sorted(gaps):
        print(f"| {p} | {gaps[p]:.1f} |")


# --- broker outage ---------------------------------------------------------------------------


def broker_outage(bundle: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp), kafka_port=_free_port(), controller_port=_free_port(),
                           redis_port=_free_port())  # fmt: skip
        stack.up()
        try:
            topics = _topics(stack.bootstrap, partitions=2)
            log = Path(tmp) / "worker.err"
            argv = [*CLI, "worker", "--bootstrap", stack.bootstrap, "--model", str(bundle),
                    "--redis-url", stack.redis_url, "--metrics-port", "0",
                    "--input-topic", topics["input"], "--scores-topic", topics["scores"],
                    "--alerts-topic", topics["alerts"], "--dlq-topic", topics["dlq"]]  # fmt: skip
            worker = subprocess.Popen(argv, stderr=log.open("wb"))
            time.sleep(10)
            stack.down(["kafka"])
            time.sleep(10)
            stack.up()
            time.sleep(10)
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
            lines = log.read_text().splitlines()
        finally:
            stack.down()
    raw = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            raw += 1
    print(f"broker down 10 s: {len(lines)} stderr lines, {raw} not JSON")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="SMD folder")
    parser.add_argument("--only", default="startup,redis-outage,kill,broker-outage")
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()
    from model.testing import train_tiny_bundle

    redis.Redis.from_url(REDIS_URL).ping()  # the local stack is up
    bundle = train_tiny_bundle(Path(tempfile.mkdtemp()) / "tiny")
    for name in args.only.split(","):
        print(f"\n### {name}\n")
        {
            "startup": lambda: startup(bundle),
            "redis-outage": lambda: redis_outage(args.data_dir, args.rate),
            "kill": lambda: kill(bundle, args.rate),
            "broker-outage": lambda: broker_outage(bundle),
        }[name]()


if __name__ == "__main__":
    main()
