"""The worker's Prometheus metrics and the liveness/readiness state its probes report.

Each worker owns its own :class:`~prometheus_client.CollectorRegistry`, so several workers in one
process (tests, the benchmark) never collide on metric names. streamer/probes.py serves them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.probes import Probes

__all__ = ["WorkerMetrics"]

# Seconds; from sub-millisecond decode of a small batch up to a produce waiting out a broker blip.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_SIZE_BUCKETS = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096)
_FILL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

# A loop that has not ticked for this long is stuck (the ack wait and the batch poll both tick
# several times a second), well inside the group's 300 s max.poll.interval.ms.
STUCK_AFTER_S = 60.0


class WorkerMetrics:
    """Every metric one worker exports, plus the liveness/readiness state the probes read."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter("ama_records_in", "Input records consumed.", registry=r)
        self.records_out = Counter(
            "ama_records_out", "Messages produced and acknowledged.", ["kind"], registry=r
        )
        self.rejects = Counter(
            "ama_rejects", "Input records sent to the DLQ.", ["code"], registry=r
        )
        self.batch_size = Histogram(
            "ama_batch_size", "Records per micro-batch.", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_fill = Histogram(
            "ama_batch_fill_ratio", "Batch size / max_records.", buckets=_FILL_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "ama_stage_seconds",
            "Time per batch in each stage (decode, score, verdicts, produce, commit).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "ama_end_to_end_seconds",
            "From a record's event time to the acknowledgement of its score event.",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.alerts = Counter("ama_alerts", "Alert transitions produced.", ["status"], registry=r)
        self.degraded_batches = Counter(
            "ama_degraded_batches", "Batches judged with cached thresholds.", registry=r
        )
        self.delivery_failures = Counter(
            "ama_delivery_failures", "Failed deliveries (re-produced).", ["error"], registry=r
        )
        self.model_info = Gauge(
            "ama_model_info", "1 for the model version being served.", ["model_version"], registry=r
        )
        self.model_reloads = Counter(
            "ama_model_reloads", "Hot-reload attempts by outcome.", ["outcome"], registry=r
        )
        self.consumer_lag = Gauge(
            "ama_consumer_lag",
            "Records behind the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "ama_assigned_partitions", "Partitions this worker owns.", registry=r
        )
        self._last_tick = time.monotonic()
        self._ready = False
        self._served_version: str | None = None

    def tick(self) -> None:
        """The loop is alive (called from every wait, so a long ack wait is not 'stuck')."""
        self._last_tick = time.monotonic()

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def serving(self, model_version: str) -> None:
        """Switch the model-info gauge to ``model_version``."""
        if self._served_version is not None:
            self.model_info.remove(self._served_version)
        self.model_info.labels(model_version).set(1)
        self._served_version = model_version

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the per-partition lag (partitions no longer owned disappear)."""
        self.consumer_lag.clear()
        for (topic, partition), value in lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(value)

    def observe_end_to_end(self, seconds: np.ndarray) -> None:
        """Observe one latency per record of a batch in one go.

        ``Histogram.observe`` per record costs more than the rest of the record's bookkeeping;
        this adds the batch's per-bucket counts and sum instead (prometheus-client keeps them in
        ``_buckets``/``_sum``/``_upper_bounds``, unchanged since its first releases; the test
        compares the exposition with per-record ``observe``).
        """
        hist: Any = self.end_to_end
        counts = np.bincount(
            np.searchsorted(hist._upper_bounds, seconds, side="left"),
            minlength=len(hist._upper_bounds),
        )
        for bucket, n in zip(hist._buckets, counts.tolist(), strict=True):
            if n:
                bucket.inc(n)
        hist._sum.inc(float(seconds.sum()))

    def healthy(self) -> bool:
        return time.monotonic() - self._last_tick < STUCK_AFTER_S

    def ready(self) -> bool:
        return self._ready and self.healthy()

    def probes(self) -> Probes:
        """What streamer/probes.py serves for this worker."""
        return Probes(self.registry, self.healthy, self.ready)
