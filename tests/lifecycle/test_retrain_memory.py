"""A retrain window larger than its memory cap: the read stays under the cap, still spans the
window, and the scores join and the drift check stream instead of holding whole topics
(real Kafka)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from streamer.lifecycle.drift import DriftWindow, bin_counts, psi_of_counts

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIM = 38
N = 24_000  # input records in the window: ~19 MB of JSON values
CAP_MB = 2.0  # retrain.max_window_mb
# A window reader's Kafka client costs 11-15 MB of resident memory whatever it reads (its
# threads, buffers, a prefetch queue bounded by READER_QUEUE_KB), ~24 MB over a cycle's three
# reads (measured here 2026-12-01); the heap bound above is the precise one.
CLIENT_MB = 32

# Runs one cycle's data step in a fresh interpreter (no torch: only what the step imports) and
# reports the Python heap's peak (tracemalloc, numpy arrays included) and the process's peak RSS
# growth over the step (VmHWM reset just before it, through /proc/self/clear_refs).
PROBE = """
import json, sys, time, tracemalloc
from schemas.settings import load_settings
from streamer.lifecycle.training_set import build_training_set

args = json.loads(sys.argv[1])
settings = load_settings(kafka=args["kafka"], retrain=args["retrain"])

def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
before = rss_kb("VmRSS:")
tracemalloc.start()
data = build_training_set(settings, kind="vector", input_shape=(38,), now_s=time.time())
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"heap_peak": peak, "rss_growth_kb": rss_kb("VmHWM:") - before if reset else None,
                  "summary": data.summary}))
"""


def _produce_window(bootstrap: str, topic: str, scores: str) -> None:
    rng = np.random.default_rng(0)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(N):
        key = f"m{i % 10}"
        value = orjson.dumps({"key": key, "ts": 1.7e9 + i, "values": rng.normal(size=DIM).tolist()})
        producer.produce(topic, value, key.encode(), partition=i % 2)
        producer.poll(0)
    assert producer.flush(60) == 0
    # One score event per record, as the worker writes them (offsets per partition in order).
    for i in range(N):
        event = {"key": f"m{i % 10}", "score": float(i % 7), "is_anomaly": i % 50 == 0,
                 "model_version": "ama-test", "source": {"topic": topic, "partition": i % 2,
                 "offset": i // 2}, "pad": "x" * 200}  # fmt: skip
        producer.produce(scores, orjson.dumps(event), partition=i % 2)
        producer.poll(0)
    assert producer.flush(60) == 0


def test_a_window_larger_than_the_cap_is_read_within_it(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str]
) -> None:
    topic, scores = topic_factory("in", partitions=2), topic_factory("scores", partitions=2)
    _produce_window(kafka_bootstrap, topic, scores)
    args = {
        "kafka": {"bootstrap": kafka_bootstrap, "input_topic": topic, "scores_topic": scores},
        "retrain": {
            "group_id": group_factory(), "max_records": 5000, "max_window_mb": CAP_MB,
            "window_s": 3600,
        },
    }  # fmt: skip
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    cap = CAP_MB * 2**20
    summary = out["summary"]
    print(f"window {N} records (~{N * 800 / 2**20:.0f} MB), cap {CAP_MB} MB: read "
          f"{summary['records_read']}, heap peak {out['heap_peak'] / 2**20:.1f} MB, RSS growth "
          f"{(out['rss_growth_kb'] or 0) / 1024:.1f} MB")  # fmt: skip
    assert summary["records_read"] < N / 4  # the cap, not max_records, bound the read
    assert out["heap_peak"] < 3 * cap  # the documented bound: about 3x max_window_mb
    if out["rss_growth_kb"] is not None:  # with librdkafka's own memory (docs/retrain.md)
        assert out["rss_growth_kb"] * 1024 < 3 * cap + CLIENT_MB * 2**20
    assert summary["train"] > 0 and summary["excluded_unscored"] == 0  # every record joined


def test_the_drift_window_reads_only_what_is_new_and_forgets_old_minutes(
    kafka_bootstrap: str, topic_factory: Callable[..., str], group_factory: Callable[[], str]
) -> None:
    from schemas.settings import load_settings

    scores = topic_factory("scores")
    calibration = {"z_quantiles": {"0.5": 0.0, "0.9": 1.0, "0.95": 2.0, "0.99": 3.0}}
    settings = load_settings(
        kafka={"bootstrap": kafka_bootstrap, "scores_topic": scores},
        retrain={"group_id": group_factory(), "drift_window_s": 900},
    )
    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def send(values: list[float], version: str = "v1") -> None:
        for v in values:
            producer.produce(scores, orjson.dumps({"key": "k", "score": v,
                                                   "model_version": version}))  # fmt: skip
        assert producer.flush(30) == 0

    rng = np.random.default_rng(1)
    first = rng.normal(size=300).tolist()
    send(first)
    window = DriftWindow()
    now = time.time()
    drift = window.update(settings, model_version="v1", calibration=calibration, now_s=now)
    expected = psi_of_counts(bin_counts(np.array(first), calibration))
    assert drift == {"k": pytest.approx(expected)}
    second = (rng.normal(size=300) + 3).tolist()  # drifted
    send(second)
    send([0.0] * 50, version="v0")  # another version's scores are not counted
    drift = window.update(settings, model_version="v1", calibration=calibration, now_s=now + 1)
    both = psi_of_counts(bin_counts(np.array(first + second), calibration))
    assert drift == {"k": pytest.approx(both)}  # each event counted once, none re-read
    assert window.update(settings, model_version="v1", calibration=calibration,
                         now_s=now + 3600) == {}  # fmt: skip  # all minutes left the window
