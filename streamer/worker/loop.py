"""The confluent-kafka worker: consume a micro-batch, run the pipeline core, produce, commit.

One thread, one batch at a time (docs/worker.md has the full commit order and the reasons):

1. gather up to ``max_records`` messages for at most ``max_wait_ms`` (several ``consume`` calls,
   so an early return of ``consume`` never shrinks a batch: confluent-kafka-python #2205);
2. :func:`streamer.worker.pipeline.process_batch` decodes, scores, judges and serialises;
3. produce every output message, then wait until all are acknowledged, re-producing failures;
   while waiting longer than ``pause_after_s`` the assigned partitions are paused and the
   consumer keeps polling, so the group never sees us exceed ``max.poll.interval.ms``;
4. only then record the batch's offsets as done and commit them.

The group uses the eager ``roundrobin`` assignor on purpose: with cooperative-sticky, manual
commits during a rebalance trigger follow-up rebalances (librdkafka #4059), while an eager
revoke is a clean point to finish the in-flight batch and commit synchronously.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas.settings import Settings
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.offsets import OffsetBook, Partition, next_offsets
from streamer.worker.outbox import Outbox, producer_config
from streamer.worker.pipeline import BatchResult, RawBatch, Topics, VerdictSource, process_batch

if TYPE_CHECKING:  # a type only: the passthrough benchmark imports this module without torch
    from streamer.lifecycle.reload import ModelSlot

__all__ = ["Worker", "WorkerOptions", "consumer_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Loop timings; the defaults suit production, tests shorten some."""

    top_k: int = 3
    # An ack wait longer than this pauses the partitions (back-pressure) and keeps polling.
    pause_after_s: float = 0.5
    # On revoke, how long to wait for the in-flight batch's acks before dropping it. Must stay
    # well below the rebalance timeout (max.poll.interval.ms, 300 s) so the group is not held up.
    revoke_budget_s: float = 10.0
    # On SIGTERM/SIGINT, how long to wait for the last batch's acks before closing uncommitted.
    drain_budget_s: float = 30.0


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Consumer options; ``kafka.extra`` (inside ``client_config``) is applied last."""
    return {
        "group.id": settings.kafka.group_id,
        "enable.auto.commit": False,  # commits follow produce acks, never a timer
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group must not skip records already written
        "partition.assignment.strategy": "roundrobin",  # eager; see the module docstring
        "statistics.interval.ms": 5000,  # per-partition consumer lag for the metrics
        **settings.kafka.client_config(),
    }


class Worker:
    """One group member. ``run()`` blocks until :meth:`stop`; call it from one thread only."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: ModelSlot,
        verdicts: VerdictSource,
        metrics: WorkerMetrics | None = None,
        options: WorkerOptions | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._verdicts = verdicts
        self.metrics = metrics or WorkerMetrics()
        self._opt = options or WorkerOptions()
        kafka = settings.kafka
        self._topics = Topics(
            scores=kafka.scores_topic, alerts=kafka.alerts_topic, dlq=kafka.dlq_topic
        )
        self._consumer = Consumer(
            {**consumer_config(settings), "error_cb": _on_error, "stats_cb": self._on_stats}
        )
        self._outbox = Outbox(
            {**producer_config(kafka.client_config()), "error_cb": _on_error},
            on_failure=lambda err: self.metrics.delivery_failures.labels(err.name()).inc(),
        )
        self._book = OffsetBook(self._consumer)
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._assigned: set[Partition] = set()
        self._inflight: dict[Partition, int] | None = None  # offsets of the batch being settled
        self._carry: list[Message] = []  # messages a poll returned while waiting for acks
        self._paused = False
        self._epoch = 0  # bumped by every revoke/loss: messages gathered before it are stale

    @property
    def model_version(self) -> str:
        """The version this worker scores with now (it changes between batches on a reload)."""
        return self._model.detector.model_version

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain, commit and close (safe from a signal handler or thread)."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()

    def run(self) -> None:
        """Consume until stopped; then settle the last batch, commit, close both clients."""
        detector = self._model.detector
        self.metrics.serving(detector.model_version)
        self._consumer.subscribe(
            [self._settings.kafka.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", extra={"model_version": detector.model_version})
        # Every batch allocates thousands of short-lived objects, so the cyclic collector runs
        # often; without this each of its full passes also walks the model and the libraries
        # loaded so far (hundreds of thousands of objects that live as long as the process).
        gc.freeze()
        self.metrics.set_ready(True)
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                batch = self._gather()
                if batch:
                    self._handle(batch)
        finally:
            self.metrics.set_ready(False)
            self._close()

    def _close(self) -> None:
        if self._inflight is not None:  # stopped while settling (only via an exception)
            self._finish_inflight(self._opt.drain_budget_s)
        self._book.commit_sync([tp for tp in self._assigned])
        self._consumer.close()  # leaves the group now: partitions move without a session timeout
        self._outbox.close(5.0)  # only stray retries of abandoned batches can be left
        log.info("worker stopped")

    # --- one batch ------------------------------------------------------------------------------

    def _gather(self) -> list[Message]:
        """Up to ``max_records`` messages within ``max_wait_ms`` of the first call."""
        max_records = self._settings.batch.max_records
        deadline = time.monotonic() + self._settings.batch.max_wait_ms / 1000.0
        batch, self._carry = self._carry, []
        epoch = self._epoch
        while len(batch) < max_records and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self._consumer.consume(max_records - len(batch), timeout=left)
            self.metrics.tick()
            if self._epoch != epoch:  # a rebalance ran inside consume: earlier messages are stale
                batch, epoch = [], self._epoch
            batch.extend(m for m in got if self._usable(m))
        return [m for m in batch if (m.topic(), m.partition()) in self._assigned]

    def _usable(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error: %s", err.str())
        return False

    def _handle(self, messages: list[Message]) -> None:
        # topic/partition/offset are set on every consumed message without an error.
        raw = RawBatch(
            topics=[m.topic() or "" for m in messages],
            partitions=np.array([m.partition() for m in messages], dtype=np.int64),
            offsets=np.array([m.offset() for m in messages], dtype=np.int64),
            keys=[m.key() for m in messages],
            values=[m.value() for m in messages],
        )
        result = process_batch(
            raw,
            detector=self._model.detector,
            verdicts=self._verdicts,
            topics=self._topics,
            max_bytes=self._settings.limits.max_message_bytes,
            top_k=self._opt.top_k,
        )
        offsets = next_offsets(raw)
        self._inflight = offsets
        started = time.perf_counter()
        self._outbox.send(result.messages)
        settled = self._await_acks()
        acked = time.perf_counter()
        if self._inflight is None:  # a revoke finished (or dropped) this batch meanwhile
            return
        self._inflight = None
        if settled:
            self._book.done(offsets)
            self._book.commit_async(offsets)
            self._record(result, acked - started, time.perf_counter() - acked)
        self._resume()

    def _await_acks(self) -> bool:
        """Serve delivery reports until the batch is acknowledged, staying a live group member.

        Returns False if a revoke dropped the batch or the shutdown budget ran out first.
        """
        started = time.monotonic()
        while not self._outbox.settle(0.05):
            self.metrics.tick()
            if self._inflight is None:
                return False
            if self._stop.is_set() and time.monotonic() - self._stop_at > self._opt.drain_budget_s:
                log.error("shutdown budget spent with unacknowledged outputs; not committing")
                return False
            if time.monotonic() - started > self._opt.pause_after_s:
                self._pause()
                message = self._consumer.poll(0)  # serves rebalances; paused => no records
                if message is not None and self._usable(message):
                    self._carry.append(message)
        return True

    def _record(self, result: BatchResult, produce_s: float, commit_s: float) -> None:
        m = self.metrics
        m.records_in.inc(result.n_in)
        m.batch_size.observe(result.n_in)
        m.batch_fill.observe(result.n_in / self._settings.batch.max_records)
        for code, n in result.rejects.items():
            m.rejects.labels(code).inc(n)
        for kind, n in Counter(out.kind for out in result.messages).items():
            m.records_out.labels(kind).inc(n)
        for status, n in result.alerts.items():
            m.alerts.labels(status).inc(n)
        for stage, seconds in result.seconds.items():
            m.stage_seconds.labels(stage).observe(seconds)
        m.stage_seconds.labels("produce").observe(produce_s)
        m.stage_seconds.labels("commit").observe(commit_s)
        if result.degraded:
            m.degraded_batches.inc()
        m.observe_end_to_end(np.maximum(0.0, time.time() - result.record_ts))

    def _maybe_reload(self) -> None:
        outcome = self._model.maybe_reload()
        if outcome is not None:
            self.metrics.model_reloads.labels(outcome).inc()
            self.metrics.serving(self._model.detector.model_version)

    # --- back-pressure --------------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and self._assigned:
            self._consumer.pause(_tps(self._assigned))
            self._paused = True
            log.info("paused partitions while outputs are unacknowledged")

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._assigned:
                self._consumer.resume(_tps(self._assigned))

    # --- rebalance callbacks (run inside consume/poll on this thread) ---------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._paused = False  # a fresh eager assignment starts unpaused
        self.metrics.assigned_partitions.set(len(self._assigned))
        log.info("partitions assigned", extra={"partitions": sorted(self._assigned)})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish the in-flight batch within the revoke budget, commit, and let go."""
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        if self._inflight is not None:
            self._finish_inflight(self._opt.revoke_budget_s)
        self._book.commit_sync(revoked)
        self._let_go(revoked, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions already belong to someone else: committing would be refused; drop."""
        if self._inflight is not None:
            self._inflight = None
            self._outbox.abandon()
        self._let_go([(tp.topic, tp.partition) for tp in partitions], "lost")

    def _finish_inflight(self, budget_s: float) -> None:
        offsets, self._inflight = self._inflight, None
        if offsets is not None and self._outbox.settle(budget_s):
            self._book.done(offsets)
            self._book.commit_sync(offsets)
        else:
            dropped = self._outbox.abandon()
            log.warning("in-flight batch dropped uncommitted", extra={"failed": dropped})

    def _let_go(self, partitions: list[Partition], why: str) -> None:
        self._book.forget(partitions)
        self._assigned -= set(partitions)
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) in self._assigned]
        self._epoch += 1
        self.metrics.assigned_partitions.set(len(self._assigned))
        log.info(f"partitions {why}", extra={"partitions": sorted(partitions)})

    def _on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        lag: dict[Partition, int] = {}
        for topic, info in stats.get("topics", {}).items():
            for p, part in info.get("partitions", {}).items():
                partition = int(p)
                if (topic, partition) in self._assigned and part.get("consumer_lag", -1) >= 0:
                    lag[(topic, partition)] = int(part["consumer_lag"])
        self.metrics.set_lag(lag)


# librdkafka reports every reconnect attempt (every ~100 ms while a broker is down); one line
# per distinct error per this many seconds says the same without flooding the log.
ERROR_LOG_EVERY_S = 10.0
_error_logged: dict[int, float] = {}


def _on_error(err: KafkaError) -> None:
    """librdkafka reports broker outages here and retries by itself; only fatal ones stop us."""
    if err.fatal():
        raise KafkaException(err)
    now = time.monotonic()
    if now - _error_logged.get(err.code(), -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
        _error_logged[err.code()] = now
        log.warning("kafka: %s", err.str())


def _tps(partitions: set[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]
