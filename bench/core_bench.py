"""Pipeline-core throughput without a broker: is the model or the rest of the worker the limit?

    python bench/core_bench.py [--device cuda] [--batch 1024] [--seconds 2] [--json out.json]

Runs :func:`streamer.worker.pipeline.process_batch` (decode, score, judge, serialise every
output) on pre-encoded micro-batches of the benchmark's own inputs (bench/data.py): 38-dim
SensorRecord JSON with the default 3-member model, and 28x28 images in the binary frame. Each
model runs three ways on the chosen device: scoring replaced by a no-op, float32 and bfloat16.
Thresholds come from an in-memory fixed-threshold source, so Redis is left out too: the no-op
row is what decoding and serialising cost, and a scored row's ratio to it says how much of a
worker's CPU time the model would take (the worker's Kafka ceiling is `ama-stream bench`'s
``passthrough`` row). Made for machines that cannot run the local stack, such as a lent GPU
machine (bench/gpu-check.sh); it runs on the CPU as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.data import image_messages, train_bundles, vector_messages, vector_rows
from model.detector import AMADetector, pick_device, pick_precision
from streamer.worker.batch import RawBatch, Topics
from streamer.worker.pipeline import process_batch

TOPICS = Topics(scores="scores", alerts="alerts", dlq="dlq")


@dataclass(frozen=True, slots=True)
class _Verdicts:
    thresholds: np.ndarray
    is_anomaly: np.ndarray
    alerts: Sequence[Any] = ()
    degraded: bool = False


class FixedThreshold:
    """Every record judged against the model's own threshold; no state, no alerts."""

    def apply(self, *, floor: float, scores: np.ndarray, **_: Any) -> _Verdicts:
        return _Verdicts(np.full(len(scores), floor), scores > floor)


class NoOpScores:
    """The detector with its arithmetic removed: every record scores 0."""

    def __init__(self, detector: AMADetector) -> None:
        self._detector = detector

    def __getattr__(self, name: str) -> Any:
        return getattr(self._detector, name)

    def score_with_features(self, x: np.ndarray, top_k: int) -> tuple[np.ndarray, Any]:
        features = np.zeros((len(x), top_k), dtype=np.int64) if self.kind == "vector" else None
        return np.zeros(len(x)), features


@dataclass(frozen=True, slots=True)
class CoreRow:
    model: str
    scoring: str  # "no-op", "float32" or "bfloat16"
    device: str
    batch: int
    records_per_s: float
    ratio_to_noop: float


def _batches(messages: list[tuple[bytes, bytes]], size: int) -> list[RawBatch]:
    out = []
    for start in range(0, len(messages) - size + 1, size):
        part = messages[start : start + size]
        out.append(RawBatch(topics=["in"] * size, partitions=np.zeros(size, np.int64),
                            offsets=np.arange(start, start + size, dtype=np.int64),
                            keys=[k for k, _ in part], values=[v for _, v in part]))  # fmt: skip
    return out


def _rate(detector: Any, batches: list[RawBatch], seconds: float) -> float:
    """Median records/s of 3 timed windows, after one warm-up batch."""

    def one(batch: RawBatch) -> None:
        process_batch(batch, detector=detector, verdicts=FixedThreshold(), topics=TOPICS,
                      max_bytes=1 << 20)  # fmt: skip

    one(batches[0])
    rates = []
    for _ in range(3):
        n, i, t0 = 0, 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < seconds / 3:
            one(batches[i % len(batches)])
            n, i = n + len(batches[i % len(batches)]), i + 1
        rates.append(n / dt)
    return statistics.median(rates)


def run(device: str | None, batch: int, seconds: float) -> list[CoreRow]:
    dev = pick_device(device)
    rows = vector_rows(max(8 * batch, 4096))
    inputs = {"vector-38 (3 members)": vector_messages(rows),
              "image-28x28": image_messages(8 * batch)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ama-core-") as tmp:
        bundles = train_bundles(rows, Path(tmp))
        models = {"vector-38 (3 members)": bundles["vector"], "image-28x28": bundles["image"]}
        out: list[CoreRow] = []
        for name, bundle in models.items():
            batches = _batches(inputs[name], batch)
            detector = AMADetector.load(bundle, device=dev)
            noop = _rate(NoOpScores(detector), batches, seconds)
            out.append(CoreRow(name, "no-op", str(dev), batch, noop, 1.0))
            for precision in ("float32", "bfloat16"):
                detector.to(dev, pick_precision(precision, dev))
                rate = _rate(detector, batches, seconds)
                out.append(CoreRow(name, precision, str(dev), batch, rate, rate / noop))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if any)")
    ap.add_argument("--batch", type=int, default=1024, help="records per micro-batch")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as a worker runs
    rows = run(args.device, args.batch, args.seconds)
    print(f"{'model':<24} {'scoring':<9} {'device':<7} {'batch':>6} {'records/s':>11} "
          f"{'x no-op':>8}")  # fmt: skip
    for r in rows:
        print(f"{r.model:<24} {r.scoring:<9} {r.device:<7} {r.batch:>6} "
              f"{r.records_per_s:>11,.0f} {r.ratio_to_noop:>8.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
