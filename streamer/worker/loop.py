"""The confluent-kafka worker: consume a micro-batch, run the pipeline core, produce, commit.

One thread, one batch at a time (docs/worker.md has the full commit order and the reasons):

1. catch up: if Redis was unavailable for earlier batches and answers again, apply their held
   records (streamer/worker/backlog.py), produce the alerts that causes, commit them;
2. gather up to ``max_records`` messages for at most ``max_wait_ms`` (several ``consume`` calls,
   so an early return of ``consume`` never shrinks a batch: confluent-kafka-python #2205);
3. :func:`streamer.worker.pipeline.process_batch` decodes, scores, judges and serialises,
   through :func:`streamer.worker.isolate.process_isolating`, so a record that makes it raise
   becomes a dead letter instead of stopping the group;
4. produce every output message, then wait until all are acknowledged, re-producing failures;
   while waiting longer than ``pause_after_s`` the assigned partitions are paused and the
   consumer keeps polling, so the group never sees us exceed ``max.poll.interval.ms``;
5. only then record the batch's offsets as done and commit them (unless the batch is held,
   because Redis could not take it: then at step 1 of a later round).

The group uses the eager ``roundrobin`` assignor on purpose: with cooperative-sticky, manual
commits during a rebalance trigger follow-up rebalances (librdkafka #4059), while an eager
revoke is a clean point to finish the in-flight batch and commit synchronously.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas.errors import ServiceError
from schemas.settings import Settings
from streamer.logs import kafka_logger
from streamer.worker.backlog import Backlog
from streamer.worker.batch import OutMessage, RawBatch, Topics
from streamer.worker.config import WorkerOptions, consumer_config
from streamer.worker.isolate import process_isolating
from streamer.worker.kafka_events import KafkaEvents
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.offsets import OffsetBook, Partition, next_offsets
from streamer.worker.outbox import Delivery, Outbox, producer_config
from streamer.worker.pipeline import BatchResult, process_batch

if TYPE_CHECKING:  # types only: the passthrough benchmark imports this module without torch
    from streamer.lifecycle.reload import ModelSlot
    from streamer.state.verdicts import ThresholdState

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _InFlight:
    """The batch being settled: its delivery, and its offsets unless it is held."""

    delivery: Delivery
    offsets: dict[Partition, int] | None


class Worker:
    """One group member. ``run()`` blocks until :meth:`stop`; call it from one thread only."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: ModelSlot,
        verdicts: ThresholdState,
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
        events = KafkaEvents(self.metrics, lambda: self._assigned)
        callbacks = {"error_cb": events.on_error, "logger": kafka_logger()}
        self._consumer = Consumer(
            {**consumer_config(settings), **callbacks, "stats_cb": events.on_stats}
        )
        self._outbox = Outbox(
            {**producer_config(kafka.client_config()), **callbacks}, on_failure=self._failed
        )
        self._book = OffsetBook(self._consumer)
        self._backlog = Backlog(settings.worker.max_held_records)
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._assigned: set[Partition] = set()
        self._inflight: _InFlight | None = None
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
        self.metrics.serving(self.model_version)
        self._consumer.subscribe(
            [self._settings.kafka.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("worker started", extra={"model_version": self.model_version})
        # Every batch allocates thousands of short-lived objects, so the cyclic collector runs
        # often; without this each of its full passes also walks the model and the libraries
        # loaded so far (hundreds of thousands of objects that live as long as the process).
        gc.freeze()
        self.metrics.set_running(True)
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                self._catch_up()
                batch = self._gather()
                if batch:
                    self._handle(batch)
        finally:
            self.metrics.set_running(False)
            self._close()

    def _close(self) -> None:
        if self._inflight is not None:  # stopped while settling (only via an exception)
            self._finish_inflight(self._opt.drain_budget_s)
        if self._backlog:
            log.warning(
                "records judged without Redis stay uncommitted; they will be processed again",
                extra={"records": self._backlog.records},
            )
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
        raw = RawBatch.of_kafka(messages)
        result = self._process(raw)
        if result is None:  # stopped, or the partitions moved on, while a service was out
            return
        offsets = next_offsets(raw)
        held = bool(result.unjudged) or bool(self._backlog)
        if held:  # committed once Redis has taken these records and every older held one
            self._backlog.hold(result.unjudged, offsets)
            self.metrics.degraded_records.inc(sum(len(r) for r in result.unjudged))
            self.metrics.held_records.set(self._backlog.records)
            self.metrics.set_redis_ok(False)
        else:
            self.metrics.set_redis_ok(True)
        if self._settle(result.messages, None if held else offsets):
            self.metrics.record_batch(result, self._settings.batch.max_records)

    def _process(self, raw: RawBatch) -> BatchResult | None:
        """Run the core on ``raw``; wait and retry while a service cannot do its part, stop on
        a fatal one. Records that make the core raise come back as dead letters."""
        epoch = self._epoch
        detector = self._model.detector
        # While older batches are held, none may reach Redis before them: judge from the cache.
        verdicts = self._verdicts.cached() if self._backlog else self._verdicts
        process = partial(
            process_batch, detector=detector, verdicts=verdicts, topics=self._topics,
            max_bytes=self._settings.limits.max_message_bytes, top_k=self._opt.top_k,
        )  # fmt: skip
        while True:
            try:
                return process_isolating(
                    raw, process, dlq_topic=self._topics.dlq,
                    model_version=detector.model_version, on_error=self._settings.worker.on_error,
                )  # fmt: skip
            except ServiceError as exc:
                if exc.fatal:
                    raise
                self.metrics.waits.labels("device").inc()
                log.error("batch not processed; retrying", extra={"error": str(exc)})
                self._wait(self._opt.service_retry_s)
                if self._stop.is_set() or self._epoch != epoch:
                    return None

    def _catch_up(self) -> None:
        """Apply held records to Redis if it answers again; produce their alerts; commit."""
        if not self._backlog:
            return
        done = self._backlog.catch_up(self._verdicts, self._topics.alerts)
        self.metrics.held_records.set(self._backlog.records)
        if done.records:
            log.info(
                "Redis is back: held records applied",
                extra={"records": done.records, "alerts": len(done.messages)},
            )
            self.metrics.caught_up_records.inc(done.records)
            if self._settle(done.messages, done.offsets):
                for status, n in done.alerts.items():
                    self.metrics.late_alerts.labels(status).inc(n)
        self.metrics.set_redis_ok(not self._backlog)
        if self._backlog.full and not self._paused:
            log.warning(
                "held records at their limit: consumption paused until Redis is back",
                extra={"records": self._backlog.records},
            )
            self.metrics.waits.labels("redis").inc()
            self._pause()
        else:
            self._resume()

    def _settle(self, messages: list[OutMessage], offsets: dict[Partition, int] | None) -> bool:
        """Produce, wait for every acknowledgement, then commit ``offsets`` (None: the batch is
        held, nothing to commit yet). False if a revoke or the shutdown budget came first."""
        started = time.perf_counter()
        self._inflight = _InFlight(self._outbox.send(messages), offsets)
        settled = self._await_acks()
        acked = time.perf_counter()
        inflight, self._inflight = self._inflight, None
        if inflight is None:  # a revoke finished (or dropped) this batch meanwhile
            return False
        if settled and offsets is not None:
            self._book.done(offsets)
            self._book.commit_async(offsets)
            self.metrics.stage_seconds.labels("commit").observe(time.perf_counter() - acked)
        self.metrics.stage_seconds.labels("produce").observe(acked - started)
        self._resume()
        return settled

    def _await_acks(self) -> bool:
        """Serve delivery reports until the batch is acknowledged, staying a live group member.

        Returns False if a revoke dropped the batch or the shutdown budget ran out first.
        """
        started = time.monotonic()
        while self._inflight is not None and not self._outbox.settle(self._inflight.delivery, 0.05):
            self.metrics.tick()
            if self._stop.is_set() and time.monotonic() - self._stop_at > self._opt.drain_budget_s:
                log.error("shutdown budget spent with unacknowledged outputs; not committing")
                return False
            if time.monotonic() - started > self._opt.pause_after_s:
                self._pause()
                self._poll()
        return self._inflight is not None

    def _wait(self, seconds: float) -> None:
        """Stay a live group member for ``seconds`` without taking records."""
        self._pause()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            self.metrics.tick()
            self._poll(0.1)
        self._resume()

    def _poll(self, timeout: float = 0.0) -> None:
        message = self._consumer.poll(timeout)  # serves rebalances; paused => no records
        if message is not None and self._usable(message):
            self._carry.append(message)

    def _maybe_reload(self) -> None:
        outcome = self._model.maybe_reload()
        if outcome is not None:
            self.metrics.model_reloads.labels(outcome).inc()
            self.metrics.serving(self.model_version)

    # --- back-pressure --------------------------------------------------------------------------

    def _pause(self) -> None:
        if not self._paused and self._assigned:
            self._consumer.pause(_tps(self._assigned))
            self._paused = True
            log.info("paused partitions")

    def _resume(self) -> None:
        """Resume consuming, unless the backlog of held records is at its limit."""
        if self._paused and not self._backlog.full:
            self._paused = False
            if self._assigned:
                self._consumer.resume(_tps(self._assigned))

    # --- rebalance callbacks (run inside consume/poll on this thread) ---------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._paused = False  # a fresh eager assignment starts unpaused
        self.metrics.assigned_partitions.set(len(self._assigned))
        self.metrics.set_joined()
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
            self._drop_inflight()
        self._let_go([(tp.topic, tp.partition) for tp in partitions], "lost")

    def _finish_inflight(self, budget_s: float) -> None:
        inflight = self._inflight
        if inflight is not None and self._outbox.settle(inflight.delivery, budget_s):
            self._inflight = None
            if inflight.offsets is not None:
                self._book.done(inflight.offsets)
                self._book.commit_sync(inflight.offsets)
        else:
            self._drop_inflight()

    def _drop_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            forgotten = self._outbox.abandon(inflight.delivery)
            log.warning("in-flight batch dropped uncommitted", extra={"failed": forgotten})
            self.metrics.dropped_failures.inc(forgotten)

    def _failed(self, err: KafkaError, abandoned: bool) -> None:
        """A delivery failed; one of a batch given up is dropped, never produced again."""
        self.metrics.delivery_failures.labels(err.name()).inc()
        if abandoned:
            self.metrics.dropped_failures.inc()

    def _let_go(self, partitions: list[Partition], why: str) -> None:
        self._book.forget(partitions)
        dropped = self._backlog.forget(partitions)
        self.metrics.held_records.set(self._backlog.records)
        self._assigned -= set(partitions)
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) in self._assigned]
        self._epoch += 1
        self.metrics.assigned_partitions.set(len(self._assigned))
        log.info(f"partitions {why}", extra={"partitions": sorted(partitions), "held": dropped})


def _tps(partitions: set[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]
