"""Acceptance runs of the retrain job on real data: SMD machine telemetry.

A worker (production wiring, real Kafka + Redis) serves a champion trained on the machine's
training half, while parts of its labelled test half are replayed.

``--scenario shift``: three phases.

  A  rows [0, a)        as recorded                                   champion serving
  B  rows [a, b)        + ``shift`` on the 6 most variable features (a new operating point)
  -- one retrain cycle (window = A + B, feedback for every labelled incident row in it and as
     many normal rows) --
  C  rows [b, end)      + the same shift                              what the gate decided

  False alarms per 10k = records labelled normal that the worker flagged (its per-key
  thresholds included), per 10,000 records labelled normal, from the score events.

``--scenario poison``: the normal rows of [0, b) with unlabelled incident rows repeated into
them (about 10 % of the window) while the worker's verdicts are lax (a fixed threshold nobody
reaches), so exclusion cannot catch them. Feedback labels other incident rows (also replayed
into the window) and as many normal rows: ``--labels within-incidents`` labels the first third
of every incident (as if operators acknowledged its start) and poisons with the rest;
``--labels other-incidents`` labels half of the incidents and poisons with the other half.

    python bench/retrain_acceptance.py --scenario shift --shift 1.0 --out shift.json

Needs the local stack (`ama-stream local up`). The champion is cached under
~/.cache/ama-stream/retrain-acceptance; topics and Redis keys are private to a run and removed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import redis
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from model.commands import train_cached
from model.detector import AMADetector
from schemas.settings import Settings, load_settings
from streamer.devtools.demo import MODEL
from streamer.devtools.replay import Replay, replay
from streamer.lifecycle.registry import publish_manual
from streamer.lifecycle.retrain import run_cycle
from streamer.worker.assemble import build_worker
from streamer.worker.loop import Worker

KEY = "machine"


def read_scores(bootstrap: str, topic: str, expect: int) -> list[dict[str, Any]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "acceptance-reader"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 600
    while len(out) < expect and time.monotonic() < deadline:
        out.extend(orjson.loads(m.value() or b"") for m in consumer.consume(5000, timeout=0.5)
                   if m.error() is None)  # fmt: skip
    consumer.close()
    return out


def false_alarms_per_10k(
    events: list[dict[str, Any]], sent: Replay, labels: np.ndarray, version: str | None = None
) -> dict[str, Any]:
    row = {round(float(t), 6): i for i, t in enumerate(sent.ts)}
    flags, versions = [], set()
    for e in events:
        i = row.get(round(float(e["ts"]), 6))
        if i is None or labels[i] or (version and e["model_version"] != version):
            continue
        flags.append(bool(e["is_anomaly"]))
        versions.add(str(e["model_version"]))
    return {
        "per_10k": round(1e4 * float(np.mean(flags)), 1),
        "normal_records": len(flags),
        "model_version": ",".join(sorted(versions)),
    }


class Run:
    """One private deployment: topics, Redis prefix, model store, a worker in a thread."""

    def __init__(self, args: argparse.Namespace, worker: Worker, settings: Settings) -> None:
        self.args, self.worker, self.settings = args, worker, settings
        self.kafka = {"bootstrap.servers": args.bootstrap}
        self.history: list[dict[str, Any]] = []

    def send(self, rows: np.ndarray) -> Replay:
        topic = self.settings.kafka.input_topic
        return replay(self.kafka, topic, rows, kind="vector", keys=[KEY] * len(rows))

    def scores(self, expect: int) -> list[dict[str, Any]]:
        return read_scores(self.args.bootstrap, self.settings.kafka.scores_topic, expect)

    def feedback(self, ts: np.ndarray, is_anomaly: np.ndarray) -> None:
        producer = Producer(self.kafka)
        assert self.settings.retrain.labels_topic is not None
        for t, a in zip(ts.tolist(), is_anomaly.tolist(), strict=True):
            label = {"key": KEY, "ts": t, "is_anomaly": a}
            producer.produce(self.settings.retrain.labels_topic, orjson.dumps(label))
        producer.flush(30)


@contextmanager
def deployment(args: argparse.Namespace, bundle: Path, **thresholds: Any) -> Iterator[Run]:
    tag = uuid.uuid4().hex[:8]
    names = {k: f"acceptance.{k}.{tag}" for k in ("input", "scores", "alerts", "dlq", "labels")}
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(n, 1, 1) for n in names.values()]).values():
        f.result(30)
    prefix = f"acceptance.{tag}"
    settings = load_settings(
        kafka={"bootstrap": args.bootstrap, "group_id": f"acceptance.{tag}",
               "input_topic": names["input"], "scores_topic": names["scores"],
               "alerts_topic": names["alerts"], "dlq_topic": names["dlq"]},
        redis={"url": args.redis_url, "key_prefix": prefix},
        metrics={"port": 0},
        thresholds=thresholds,
        retrain={"store": Path(tempfile.mkdtemp(prefix="ama-store-")),
                 "labels_topic": names["labels"], "window_s": 3 * 3600, "max_records": 20000,
                 "epochs": args.epochs, "batch_size": 128, "time_budget_s": 900,
                 "device": "cpu"},
    )  # fmt: skip
    client = redis.Redis.from_url(args.redis_url)
    publish_manual(client, prefix, bundle)
    worker = build_worker(settings, torch_threads=1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    run = Run(args, worker, settings)
    try:
        yield run
    finally:
        worker.stop()
        thread.join(60)
        for f in admin.delete_topics(list(names.values())).values():
            f.result(30)
        run.history = [orjson.loads(x) for x in client.lrange(f"{prefix}:model:history", 0, -1)]
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def shift_scenario(args: argparse.Namespace, data: dict[str, np.ndarray], bundle: Path) -> dict:
    test, labels = data["test"], data["labels"]
    moved = np.argsort(-data["train"].std(0))[:6]
    shifted = test.copy()
    shifted[:, moved] += args.shift
    a, b = args.phases
    with deployment(args, bundle) as run:
        sent_a, sent_b = run.send(test[:a]), run.send(shifted[a:b])
        events = run.scores(b)
        fa_a = false_alarms_per_10k(events, sent_a, labels[:a])
        fa_b = false_alarms_per_10k(events, sent_b, labels[a:b])
        ts, window = np.concatenate([sent_a.ts, sent_b.ts]), labels[:b]
        anomalous = np.flatnonzero(window)
        normal = np.random.default_rng(0).choice(np.flatnonzero(~window), len(anomalous), False)
        picked = np.concatenate([anomalous, normal])
        run.feedback(ts[picked], window[picked])
        result = run_cycle(run.settings)
        new = (result.entry or {}).get("version") if result.decision == "published" else None
        if new:  # wait until the worker's /metrics says it serves the new version
            info = {"model_version": new}
            while run.worker.metrics.registry.get_sample_value("ama_model_info", info) != 1:
                time.sleep(0.2)
        sent_c = run.send(shifted[b:])
        fa_c = false_alarms_per_10k(run.scores(len(test)), sent_c, labels[b:], version=new)
    return {
        "scenario": f"level shift +{args.shift} on features {moved.tolist()} from row {a}",
        "false_alarms_per_10k": {
            "A: before the shift (champion)": fa_a,
            "B: after the shift (champion)": fa_b,
            "C: after the retrain": fa_c,
        },
        "history": run.history,
    }


def _segments(labels: np.ndarray) -> list[np.ndarray]:
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    return [np.arange(s, e) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def poison_scenario(args: argparse.Namespace, data: dict[str, np.ndarray], bundle: Path) -> dict:
    test, labels = data["test"], data["labels"]
    _, b = args.phases
    segments = _segments(labels)
    if args.labels == "other-incidents":  # half the incidents poison, the other half labelled
        half = len(segments) // 2
        poison_rows, labelled_rows = (
            np.concatenate(segments[:half]),
            np.concatenate(segments[half:]),
        )
    else:  # the first third of every incident labelled (acknowledged), the rest slips through
        cut = [max(1, len(s) // 3) for s in segments]
        labelled_rows = np.concatenate([s[:c] for s, c in zip(segments, cut, strict=True)])
        poison_rows = np.concatenate([s[c:] for s, c in zip(segments, cut, strict=True)])
    rng = np.random.default_rng(0)
    base = np.flatnonzero(~labels[:b])  # the window's normal rows
    repeats = max(1, int(0.1 * len(base) / len(poison_rows)))
    rows = np.concatenate([base, np.tile(poison_rows, repeats), labelled_rows])
    rows = rows[rng.permutation(len(rows))]
    with deployment(args, bundle, policy="fixed", fixed=1e9) as run:
        sent = run.send(test[rows])
        run.scores(len(rows))
        is_labelled_incident = np.isin(rows, labelled_rows)
        incident = np.flatnonzero(is_labelled_incident)
        normal = rng.choice(np.flatnonzero(~np.isin(rows, np.r_[poison_rows, labelled_rows])),
                            len(incident), replace=False)  # fmt: skip
        picked = np.concatenate([incident, normal])
        run.feedback(sent.ts[picked], is_labelled_incident[picked])
        result = run_cycle(run.settings)
        serving = run.worker.metrics.registry.get_sample_value(
            "ama_model_info", {"model_version": AMADetector.load(bundle).model_version}
        )
    return {
        "scenario": f"{len(segments)} labelled incidents, labels: {args.labels}; "
        f"{len(poison_rows)} unlabelled incident rows repeated x{repeats} "
        f"({repeats * len(poison_rows)} of {len(rows)} window records) under lax verdicts; "
        f"{len(labelled_rows)} incident rows labelled",
        "decision": result.decision,
        "champion_still_served": serving == 1,
        "history": run.history,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", choices=("shift", "poison"), default="shift")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data/smd"))
    p.add_argument("--machine", default="machine-2-7")
    p.add_argument("--shift", type=float, default=1.0)
    p.add_argument("--labels", choices=("within-incidents", "other-incidents"),
                   default="within-incidents", help="poison: which rows are labelled")  # fmt: skip
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--phases", type=int, nargs=2, default=(6000, 14000), metavar=("A", "B"))
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)

    root = args.data_dir
    data = {
        "train": np.load(root / "train" / f"{args.machine}.npy", allow_pickle=False),
        "test": np.load(root / "test" / f"{args.machine}.npy", allow_pickle=False),
        "labels": np.loadtxt(root / "test_label" / f"{args.machine}.txt").astype(bool),
    }
    data["test"] = data["test"].astype(np.float32)
    started = time.monotonic()
    cache = Path.home() / ".cache/ama-stream/retrain-acceptance"
    bundle = train_cached(data["train"], cache, "champion", epochs=args.epochs, config=MODEL)
    scenario = shift_scenario if args.scenario == "shift" else poison_scenario
    report = {
        "data": f"SMD {args.machine}: champion trained on the training half "
        f"({len(data['train'])} rows, {args.epochs} epochs), test half {len(data['test'])} rows "
        f"({int(data['labels'].sum())} labelled anomalous)",
        "champion": str(bundle),
        **scenario(args, data, bundle),
        "seconds": round(time.monotonic() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
