"""The batch-wise end-to-end histogram equals observing every record one by one."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import generate_latest

from streamer.worker.metrics import WorkerMetrics


def _e2e(metrics: WorkerMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    samples = (line.rsplit(" ", 1) for line in text.splitlines())
    return {name: float(value) for name, value in samples
            if name.startswith("ama_end_to_end_seconds_") and "_created" not in name}  # fmt: skip


def test_observe_end_to_end_matches_per_record_observe() -> None:
    rng = np.random.default_rng(0)
    # Values on bucket bounds too: a bound belongs to its own bucket (le = less or equal).
    seconds = np.concatenate([rng.exponential(0.05, 500), [0.005, 0.1, 300.0, 1000.0, 0.0]])
    bulk, one_by_one = WorkerMetrics(), WorkerMetrics()
    bulk.observe_end_to_end(seconds[:200])
    bulk.observe_end_to_end(seconds[200:])
    for value in seconds.tolist():
        one_by_one.end_to_end.observe(value)
    got, want = _e2e(bulk), _e2e(one_by_one)
    total = "ama_end_to_end_seconds_sum"
    assert got.pop(total) == pytest.approx(want.pop(total))  # summed in another order
    assert got == want  # every bucket and the count exactly
