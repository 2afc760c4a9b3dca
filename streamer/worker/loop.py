"""The confluent-kafka worker: consume a micro-batch, run the pipeline core, produce, commit.

One thread, two batches in flight at most (docs/worker.md has the full commit order): while
batch N is delivered by librdkafka's threads, the loop (1) catches up records held while Redis
was unavailable (streamer/worker/backlog.py), (2) gathers batch N+1 within the batch bounds,
(3) processes it (:func:`streamer.worker.isolate.process_isolating` around
:func:`streamer.worker.pipeline.process_batch`: a record that makes it raise becomes a dead
letter), (4) settles N: waits until all of its outputs are acknowledged (pausing the partitions
and polling while that takes long, so the group never sees us exceed ``max.poll.interval.ms``),
then commits its offsets, in N's Kafka transaction in exactly-once mode; and (5) produces N+1.

N+1 is produced only after N settled, so outputs reach the broker in input order and a commit
never passes an unacknowledged output. A rebalance (or, in exactly-once mode, an aborted
transaction) during step 4 drops N+1 unproduced: its records are consumed again from the
committed offsets. The eager ``roundrobin`` assignor is deliberate: an eager revoke is a clean
point to finish the in-flight batch and commit synchronously.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from schemas.errors import ServiceError
from schemas.settings import Settings
from streamer.logs import kafka_logger
from streamer.worker.backlog import Backlog
from streamer.worker.batch import OutMessage, RawBatch, Topics
from streamer.worker.config import WorkerOptions, consumer_config
from streamer.worker.intake import Intake
from streamer.worker.isolate import process_isolating
from streamer.worker.kafka_events import KafkaEvents
from streamer.worker.keys import KeyBudget
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.offsets import OffsetBook, Partition, next_offsets
from streamer.worker.outbox import BatchAborted, Delivery, Outbox, ProducerLost, producer_config
from streamer.worker.pipeline import BatchResult, process_batch

if TYPE_CHECKING:  # types only: the passthrough benchmark imports this module without torch
    from streamer.lifecycle.reload import ModelSlot
    from streamer.state.verdicts import ThresholdState

__all__ = ["Worker"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Prepared:
    """A processed batch ready to produce, the offsets to commit once it is acknowledged (None:
    held), the rebalance epoch it was gathered in, and its result for the metrics (None for the
    alerts of held records that were caught up)."""

    messages: list[OutMessage]
    offsets: dict[Partition, int] | None
    epoch: int
    result: BatchResult | None = None


@dataclass(slots=True)
class _InFlight:
    """The batch being delivered: its delivery, what it was, and when it was produced."""

    delivery: Delivery
    prepared: _Prepared
    sent_at: float


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
        self._keys = KeyBudget.from_settings(settings, self.metrics.tracked_keys.set)
        self._opt = options or WorkerOptions()
        kafka = settings.kafka
        self._topics = Topics(kafka.scores_topic, kafka.alerts_topic, kafka.dlq_topic)
        events = KafkaEvents(self.metrics, lambda: self._intake.assigned)
        callbacks = {"error_cb": events.on_error, "logger": kafka_logger()}
        consumer = consumer_config(settings)
        self._consumer = Consumer({**consumer, **callbacks, "stats_cb": events.on_stats})
        self._eos = settings.worker.guarantee == "exactly-once"
        self._outbox = Outbox(
            {**producer_config(kafka.client_config()), **callbacks},
            on_failure=self._failed,
            transactional_id=f"{kafka.group_id}.{consumer['client.id']}" if self._eos else None,
        )
        self._book = OffsetBook(self._consumer, self._outbox if self._eos else None)
        self._backlog = Backlog(settings.worker.max_held_records)
        self._stop = threading.Event()
        self._stop_at = 0.0
        self._intake = Intake(self._consumer, settings.batch, self.metrics, self._stop)
        self._inflight: _InFlight | None = None

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
        lost = False
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                self._catch_up()
                batch = self._intake.gather()
                ready = self._prepare(batch) if batch else None
                self._settle()
                if ready is not None and ready.epoch == self._intake.epoch:
                    self._send(ready)
                elif ready is not None:  # a rebalance during the settle: consumed again
                    self.metrics.rebalance_drops.inc()
        except ProducerLost:
            lost = True  # closing the clients would wait on the lost producer: the process ends
            raise
        finally:
            self.metrics.set_running(False)
            if not lost:
                self._close()

    def _close(self) -> None:
        if self._inflight is not None:  # the last batch, or stopped while settling
            self._finish_inflight(self._opt.drain_budget_s)
        if self._backlog:
            log.warning(
                "records judged without Redis stay uncommitted; they will be processed again",
                extra={"records": self._backlog.records},
            )
        self._book.commit_sync(list(self._intake.assigned))
        self._consumer.close()  # leaves the group now: partitions move without a session timeout
        self._outbox.close(5.0)  # only stray retries of abandoned batches can be left
        log.info("worker stopped")

    # --- one batch ------------------------------------------------------------------------------

    def _prepare(self, messages: list[Message]) -> _Prepared | None:
        """Process a gathered batch into the messages to produce (not produced yet)."""
        raw = RawBatch.of_kafka(messages)
        epoch = self._intake.epoch
        result = self._process(raw)
        if result is None:  # stopped, or the partitions moved on, while a service was out
            return None
        held = bool(result.unjudged) or bool(self._backlog)
        if held:  # committed once Redis has taken these records and every older held one
            self._backlog.hold(result.unjudged, next_offsets(raw))
            self.metrics.degraded_records.inc(sum(len(r) for r in result.unjudged))
            self.metrics.held_records.set(self._backlog.records)
        self.metrics.set_redis_ok(not held)
        return _Prepared(result.messages, None if held else next_offsets(raw), epoch, result)

    def _process(self, raw: RawBatch) -> BatchResult | None:
        """Run the core on ``raw``; wait and retry while a service cannot do its part, stop on
        a fatal one. Records that make the core raise come back as dead letters."""
        epoch = self._intake.epoch
        detector = self._model.detector
        # While older batches are held, none may reach Redis before them: judge from the cache.
        verdicts = self._verdicts.cached() if self._backlog else self._verdicts
        process = partial(
            process_batch, detector=detector, verdicts=verdicts, topics=self._topics,
            max_bytes=self._settings.limits.max_message_bytes, top_k=self._opt.top_k,
            keys=self._keys,
        )  # fmt: skip
        while True:
            try:
                result = process_isolating(
                    raw, process, dlq_topic=self._topics.dlq,
                    model_version=detector.model_version, on_error=self._settings.worker.on_error,
                )  # fmt: skip
                if not (self._eos and result.degraded):
                    return result
                # Exactly-once: an output published before Redis recorded its record could not
                # be taken back by a later abort, so the batch waits for Redis instead.
                self.metrics.waits.labels("redis").inc()
                self.metrics.set_redis_ok(False)
                log.error("Redis unavailable; batch waits (exactly-once)")
            except ServiceError as exc:
                if exc.fatal:
                    raise
                self.metrics.waits.labels("device").inc()
                log.error("batch not processed; retrying", extra={"error": str(exc)})
            self._wait(self._opt.service_retry_s)
            if self._stop.is_set() or self._intake.epoch != epoch:
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
            self._settle()  # what is in flight first: commits stay in input order
            self._send(_Prepared(done.messages, done.offsets, self._intake.epoch))
            if self._settle():
                for status, n in done.alerts.items():
                    self.metrics.late_alerts.labels(status).inc(n)
        self.metrics.set_redis_ok(not self._backlog)
        if self._backlog.full and not self._intake.paused:
            log.warning(
                "held records at their limit: consumption paused until Redis is back",
                extra={"records": self._backlog.records},
            )
            self.metrics.waits.labels("redis").inc()
            self._intake.pause()
        else:
            self._resume()

    def _send(self, prepared: _Prepared) -> None:
        """Produce a prepared batch's outputs; it is in flight until :meth:`_settle`."""
        delivery = self._outbox.send(prepared.messages)
        self._inflight = _InFlight(delivery, prepared, time.perf_counter())

    def _settle(self) -> bool:
        """Wait for every acknowledgement of the batch in flight, then commit its offsets (none
        when it is held). False if there is none, or a revoke or the shutdown budget came
        first."""
        if self._inflight is None:
            return False
        # A rebalance that arrived while the next batch was scored is served here, before that
        # batch is produced (the loop then drops it: its partitions may have moved).
        self._intake.poll()
        try:
            settled = self._await_acks()
            acked = time.perf_counter()
            inflight, self._inflight = self._inflight, None
            if inflight is None:  # a revoke finished (or dropped) this batch meanwhile
                return False
            offsets = inflight.prepared.offsets
            if settled and offsets is not None:
                self._book.commit_batch(offsets, wait=False, budget_s=self._opt.revoke_budget_s)
                self.metrics.stage_seconds.labels("commit").observe(time.perf_counter() - acked)
        except BatchAborted as exc:  # nothing of the batch was committed
            self._inflight = None
            self._rewind(exc)
            self._resume()
            return False
        self.metrics.stage_seconds.labels("produce").observe(acked - inflight.sent_at)
        if settled and inflight.prepared.result is not None:
            self.metrics.record_batch(inflight.prepared.result, self._settings.batch.max_records)
        self._resume()
        return settled

    def _rewind(self, why: BatchAborted) -> None:
        """Exactly-once, after an aborted transaction: every owned partition goes back to its
        committed offset, and what was gathered or processed since is dropped (the intake's
        epoch moves on), so the aborted batch and any after it are processed again."""
        self.metrics.aborted_transactions.inc()
        log.warning("batch aborted; processing again from the committed offsets",
                    extra={"error": str(why)})  # fmt: skip
        self._intake.rewind(self._opt.service_retry_s)
        self._wait(self._opt.service_retry_s)  # a fault: back off before the batch again

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
                self._intake.pause()
                self._intake.poll()
        return self._inflight is not None

    def _wait(self, seconds: float) -> None:
        """Stay a live group member for ``seconds`` without taking records."""
        self._intake.pause()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            self.metrics.tick()
            self._intake.poll(0.1)
        self._resume()

    def _resume(self) -> None:
        """Resume consuming, unless the backlog of held records is at its limit."""
        if not self._backlog.full:
            self._intake.resume()

    def _maybe_reload(self) -> None:
        outcome = self._model.maybe_reload()
        if outcome is not None:
            self.metrics.model_reloads.labels(outcome).inc()
            self.metrics.serving(self.model_version)

    # --- rebalance callbacks (run inside consume/poll on this thread) ---------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._intake.own(partitions)
        self.metrics.set_joined()
        log.info("partitions assigned", extra={"partitions": sorted(self._intake.assigned)})

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
        """Settle and commit the in-flight batch within ``budget_s`` (revoke, shutdown), or
        drop it uncommitted: its records are processed again by the partitions' next owner."""
        inflight = self._inflight
        try:
            if inflight is not None and self._outbox.settle(inflight.delivery, budget_s):
                self._inflight = None
                if inflight.prepared.offsets is not None:
                    self._book.commit_batch(inflight.prepared.offsets, wait=True, budget_s=budget_s)
                return
        except BatchAborted as exc:  # already aborted: nothing of it was committed
            self._inflight = None
            self.metrics.aborted_transactions.inc()
            log.warning("in-flight batch aborted", extra={"error": str(exc)})
            return
        self._drop_inflight()

    def _drop_inflight(self) -> None:
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        if self._eos:
            self._outbox.abort()
            self.metrics.aborted_transactions.inc()
            log.warning("in-flight batch aborted uncommitted")
            return
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
        self._intake.let_go(partitions)
        log.info(f"partitions {why}", extra={"partitions": sorted(partitions), "held": dropped})
