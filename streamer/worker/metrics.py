"""The worker's Prometheus metrics and the liveness/readiness state its probes report.

Each worker owns its own :class:`~prometheus_client.CollectorRegistry`, so several workers in one
process (tests, the benchmark) never collide on metric names. streamer/probes.py serves them.
Names follow Prometheus conventions (base units in the name, ``_total`` on counters, which
prometheus-client adds); deploy/prometheus and deploy/grafana use them, and
tests/deploy/test_metrics_contract.py checks both against a running worker.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamer.probes import Probes

if TYPE_CHECKING:
    from streamer.worker.pipeline import BatchResult

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
            "ama_batch_size_records", "Records per micro-batch.", buckets=_SIZE_BUCKETS, registry=r
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
        self.degraded_records = Counter(
            "ama_degraded_records",
            "Records judged without Redis (held until their state is applied).",
            registry=r,
        )
        self.held_records = Gauge(
            "ama_held_records", "Records judged without Redis, not yet applied.", registry=r
        )
        self.caught_up_records = Counter(
            "ama_caught_up_records",
            "Held records applied to Redis after an outage.",
            registry=r,
        )
        self.late_alerts = Counter(
            "ama_late_alerts",
            "Alert transitions produced by catching up after a Redis outage.",
            ["status"],
            registry=r,
        )
        self.waits = Counter(
            "ama_service_waits",
            "Times the worker paused because a service could not do its part.",
            ["service"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "ama_delivery_failures", "Failed deliveries (re-produced).", ["error"], registry=r
        )
        self.rebalance_drops = Counter(
            "ama_rebalance_dropped_batches",
            "Batches scored but not produced because a rebalance (or a rewind after an aborted "
            "transaction) came first; consumed again.",
            registry=r,
        )
        self.aborted_transactions = Counter(
            "ama_aborted_transactions",
            "Exactly-once mode: batch transactions aborted (processed again, or by the next "
            "owner of their partitions).",
            registry=r,
        )
        self.dropped_failures = Counter(
            "ama_abandoned_delivery_failures",
            "Failed deliveries of batches given up on a revoke (never re-produced).",
            registry=r,
        )
        self.model_info = Gauge(
            "ama_model_info", "1 for the model version being served.", ["model_version"], registry=r
        )
        self.model_reloads = Counter(
            "ama_model_reloads", "Hot-reload attempts by outcome.", ["outcome"], registry=r
        )
        self.consumer_lag = Gauge(
            "ama_consumer_lag_records",
            "Records behind the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "ama_assigned_partitions", "Partitions this worker owns.", registry=r
        )
        self.tracked_keys = Gauge(
            "ama_tracked_keys",
            "Distinct record keys this worker admitted within the TTL (limits.max_keys bounds it).",
            registry=r,
        )
        self._last_tick = time.monotonic()
        self._running = False
        self._joined = False
        self._broker_up = True  # until statistics or an error say otherwise
        self._redis_ok = True
        self._served_version: str | None = None

    def tick(self) -> None:
        """The loop is alive (called from every wait, so a long ack wait is not 'stuck')."""
        self._last_tick = time.monotonic()

    def set_running(self, running: bool) -> None:
        """The loop runs with its model loaded (False while starting and draining)."""
        self._running = running
        if not running:
            self._joined = False

    def set_joined(self) -> None:
        """The group handed this worker an assignment (maybe empty: more workers than
        partitions)."""
        self._joined = True

    def set_broker_up(self, up: bool) -> None:
        self._broker_up = up

    def set_redis_ok(self, ok: bool) -> None:
        self._redis_ok = ok

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

    def record_batch(self, result: BatchResult, max_records: int) -> None:
        """Count one settled batch."""
        self.records_in.inc(result.n_in)
        self.batch_size.observe(result.n_in)
        self.batch_fill.observe(result.n_in / max_records)
        for code, n in result.rejects.items():
            self.rejects.labels(code).inc(n)
        for kind, n in Tally(out.kind for out in result.messages).items():
            self.records_out.labels(kind).inc(n)
        for status, n in result.alerts.items():
            self.alerts.labels(status).inc(n)
        for stage, seconds in result.seconds.items():
            self.stage_seconds.labels(stage).observe(seconds)
        if result.degraded:
            self.degraded_batches.inc()
        self.observe_end_to_end(np.maximum(0.0, time.time() - result.record_ts))

    def healthy(self) -> bool:
        return time.monotonic() - self._last_tick < STUCK_AFTER_S

    def ready(self) -> bool:
        """Model loaded and the loop running, group joined, a broker up, Redis answering."""
        return (
            self._running and self._joined and self._broker_up and self._redis_ok
        ) and self.healthy()

    def probes(self) -> Probes:
        """What streamer/probes.py serves for this worker."""
        return Probes(self.registry, self.healthy, self.ready)
