"""The dashboard's memory and speed with 10,000 keys at the bench's record rate.

    python -m bench.dashboard_load [--keys 10000] [--rate 40000] [--seconds 30] [--json FILE]

Needs the local stack (`ama-stream local up`). Against fresh topics, in three phases:

1. **start**: `ama-stream dashboard` (the real CLI, a process of its own, default settings)
   on the empty topics: its resident memory with nothing in view;
2. **fill**: one score event per key per 10 s bucket over the last hour of event time (3.6M
   events for 10,000 keys; 1 % flagged), produced as fast as the producer can, so every slot
   of every key's ring buffer is in use: the largest the dashboard's series get with the
   default settings; how fast it reads them, and its resident memory after;
3. **live**: score events for the same keys at ``--rate`` for ``--seconds``: the dashboard's
   CPU, its resident memory, and how far behind it is when the producer stops.

Resident memory is the process's VmRSS / VmHWM from /proc. Not part of the test suite
(minutes of CPU); tests/dashboard asserts the bounds, this measures them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.dashboard.series import BYTES_PER_SLOT

BOOTSTRAP, REDIS_URL = "127.0.0.1:9092", "redis://127.0.0.1:6379/0"
PARTITIONS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def _event(key: str, ts: float, score: float, flagged: bool, offset: int) -> bytes:
    """A score event as the worker writes it (docs/contracts.md), about 250 bytes."""
    return orjson.dumps({
        "key": key, "ts": ts, "score": score, "threshold": 4.2, "is_anomaly": flagged,
        "model_version": "ama-3f9c2e1a5b7d9f01",
        "source": {"topic": "ama.input", "partition": offset % PARTITIONS, "offset": offset},
        "scored_at": ts + 0.05, "top_features": [3, 17, 5], "degraded": False,
    })  # fmt: skip


def _produce(producer: Producer, topic: str, keys: list[str], ts: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, 1.5, len(ts))
    flags = rng.random(len(ts)) < 0.01
    for i, key in enumerate(keys):
        value = _event(key, float(ts[i]), float(scores[i]), bool(flags[i]), i)
        while True:
            try:
                producer.produce(topic, value=value, key=key.encode())
                break
            except BufferError:  # the local queue is full: let librdkafka send some
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)


def _proc(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    field = {line.split(":")[0]: line.split()[1:2] for line in status.splitlines()}
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mb": int(field["VmRSS"][0]) / 1024,
        "hwm_mb": int(field["VmHWM"][0]) / 1024,
        "cpu_s": (int(stat[11]) + int(stat[12])) / TICKS,
    }


def _fleet(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/fleet", timeout=10) as response:
        return dict(json.loads(response.read()))


@contextmanager
def _topics(admin: AdminClient) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {n: f"bench.dash.{n}.{tag}" for n in ("input", "scores", "alerts", "dlq")}
    new = [NewTopic(t, PARTITIONS if n in ("input", "scores") else 1, 1) for n, t in names.items()]
    for future in admin.create_topics(new).values():
        future.result(30)
    try:
        yield names
    finally:
        for future in admin.delete_topics(list(names.values())).values():
            future.result(30)


def run(keys: int, rate: float, seconds: float) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    names = [f"dev-{i:05d}" for i in range(keys)]
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20,
                         "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000,
                         "compression.type": "lz4"})  # fmt: skip
    out: dict[str, Any] = {"keys": keys, "rate": rate, "seconds": seconds}
    with _topics(admin) as topics:
        port = 28_000 + os.getpid() % 1000
        env = {**os.environ, "AMA_DASHBOARD__PORT": str(port),
               "AMA_REDIS__KEY_PREFIX": f"bench.dash.{uuid.uuid4().hex[:8]}"}  # fmt: skip
        argv = [sys.executable, "-m", "streamer.cli", "dashboard", "--bootstrap", BOOTSTRAP,
                "--redis-url", REDIS_URL, "--input-topic", topics["input"], "--scores-topic",
                topics["scores"], "--alerts-topic", topics["alerts"], "--dlq-topic",
                topics["dlq"], "--log-level", "WARNING"]  # fmt: skip
        process = subprocess.Popen(argv, env=env)
        try:
            while True:
                try:
                    fleet = _fleet(port)
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(2.0)  # a few polls and reads of empty topics
            empty = _proc(process.pid)
            print(f"empty: {empty}", flush=True)

            now, started = time.time(), time.monotonic()
            buckets = 360  # an hour of 10 s buckets (the defaults)
            for b in range(buckets):
                ts = now - 3600 + b * 10 + np.random.default_rng(b).uniform(0, 10, keys)
                _produce(producer, topics["scores"], names, ts, seed=b)
            producer.flush(120)
            filled, produced_in = keys * buckets, time.monotonic() - started
            while fleet["read"]["scores"] < filled:
                time.sleep(0.2)
                fleet = _fleet(port)
            took = time.monotonic() - started
            after_fill = _proc(process.pid)
            out["fill"] = {
                "events": filled,
                "produced_in_s": round(produced_in, 1),
                "read_in_s": round(took, 1),
                "read_per_s": round(filled / took),
                "keys_in_view": fleet["keys"],
                "rss_mb_empty": round(empty["rss_mb"], 1),
                "rss_mb": round(after_fill["rss_mb"], 1),
                "hwm_mb": round(after_fill["hwm_mb"], 1),
                "series_mb": round(keys * buckets * BYTES_PER_SLOT / 1e6, 1),
            }
            print(f"fill: {out['fill']}", flush=True)

            total, cpu0, wall0 = filled, after_fill["cpu_s"], time.monotonic()
            step = 0.1
            per_step = int(rate * step)
            for n in range(int(seconds / step)):
                due = wall0 + n * step
                if (ahead := due - time.monotonic()) > 0:
                    time.sleep(ahead)
                picked = [names[(n * per_step + j) % keys] for j in range(per_step)]
                _produce(producer, topics["scores"], picked, np.full(per_step, time.time()), n)
                total += per_step
            producer.flush(60)
            sent_for = time.monotonic() - wall0
            stopped = time.monotonic()
            behind = total - _fleet(port)["read"]["scores"]
            while _fleet(port)["read"]["scores"] < total:
                time.sleep(0.1)
            live = _proc(process.pid)
            out["live"] = {
                "produced_per_s": round((total - filled) / sent_for),
                "dashboard_cpu_percent": round(100 * (live["cpu_s"] - cpu0) / sent_for),
                "behind_when_producer_stopped": behind,
                "caught_up_after_s": round(time.monotonic() - stopped, 2),
                "rss_mb": round(live["rss_mb"], 1),
                "hwm_mb": round(live["hwm_mb"], 1),
            }
            print(f"live: {out['live']}", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=40_000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    result = run(args.keys, args.rate, args.seconds)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"measured": time.strftime("%Y-%m-%d"), **result}, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
