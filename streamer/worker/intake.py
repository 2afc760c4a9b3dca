"""The consumer side of the worker loop: which partitions it owns, gathering a batch within the
batch bounds, pausing and resuming, and polling while it waits so the group sees a live member.

Rebalances run inside ``consume``/``poll`` on the loop's thread (confluent-kafka serves the
callbacks there); the worker's callbacks tell the intake what it owns now (:meth:`Intake.own`,
:meth:`Intake.let_go`), and every loss bumps :attr:`Intake.epoch`, so messages gathered before
it are recognised as stale.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas.settings import BatchSettings
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.offsets import Partition

__all__ = ["Intake"]

log = logging.getLogger(__name__)


class Intake:
    """Gathers batches from ``consumer`` for one worker."""

    def __init__(
        self,
        consumer: Consumer,
        batch: BatchSettings,
        metrics: WorkerMetrics,
        stop: threading.Event,
    ) -> None:
        self._consumer = consumer
        self._batch = batch
        self._metrics = metrics
        self._stop = stop
        self.assigned: set[Partition] = set()
        self.epoch = 0  # bumped by every revoke/loss: messages gathered before it are stale
        self._carry: list[Message] = []  # messages a poll returned while the loop waited
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def gather(self) -> list[Message]:
        """Up to ``max_records`` messages and ``max_bytes`` of values (at least one message)
        within ``max_wait_ms`` of the first call."""
        max_records, max_bytes = self._batch.max_records, self._batch.max_bytes
        deadline = time.monotonic() + self._batch.max_wait_ms / 1000.0
        batch, self._carry = self._carry, []
        epoch = self.epoch
        size = sum(len(m) for m in batch)
        while len(batch) < max_records and size < max_bytes and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = self._consumer.consume(max_records - len(batch), timeout=left)
            self._metrics.tick()
            if self.epoch != epoch:  # a rebalance ran inside consume: earlier messages are stale
                batch, epoch, size = [], self.epoch, 0
            for m in got:
                if self._usable(m):
                    batch.append(m)
                    size += len(m)
        if size > max_bytes and len(batch) > 1:
            batch = self._within(batch, max_bytes)
        return [m for m in batch if (m.topic(), m.partition()) in self.assigned]

    def _within(self, batch: list[Message], max_bytes: int) -> list[Message]:
        """The longest prefix of ``batch`` within ``max_bytes`` (one message at least); the
        rest waits for the next batch, in order. Bounds what one batch makes the decoder and
        the DLQ copy hold, whatever sizes the messages have."""
        size = 0
        for i, m in enumerate(batch):
            size += len(m)
            if size > max_bytes and i > 0:
                self._carry = batch[i:] + self._carry
                return batch[:i]
        return batch

    def poll(self, timeout: float = 0.0) -> None:
        """Serve rebalances and callbacks; a record it returns (from a partition assigned while
        paused) is kept for the next batch."""
        message = self._consumer.poll(timeout)
        if message is not None and self._usable(message):
            self._carry.append(message)

    def pause(self) -> None:
        if not self._paused and self.assigned:
            self._consumer.pause(_tps(self.assigned))
            self._paused = True
            log.info("paused partitions")

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self.assigned:
                self._consumer.resume(_tps(self.assigned))

    def own(self, partitions: list[TopicPartition]) -> None:
        """An assignment (eager: the whole set, unpaused)."""
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._paused = False
        self._metrics.assigned_partitions.set(len(self.assigned))

    def let_go(self, partitions: list[Partition]) -> None:
        self.assigned -= set(partitions)
        self._carry = [m for m in self._carry if (m.topic(), m.partition()) in self.assigned]
        self.epoch += 1
        self._metrics.assigned_partitions.set(len(self.assigned))

    def rewind(self, retry_s: float) -> None:
        """Go back to the committed offset of every owned partition (the beginning where none
        was committed: a new group reads from the start) and drop what was gathered since.

        The epoch moves on first, so nothing gathered before is produced even if the worker
        stops before the broker says what was committed; until it does, ask again every
        ``retry_s``, polling paused meanwhile so the group sees a live member."""
        self.epoch += 1
        while not self._stop.is_set():
            try:
                tps = self._consumer.committed(_tps(self.assigned), timeout=10)
            except KafkaException as exc:
                log.warning("rewind failed; retrying", extra={"error": str(exc.args[0])})
                self.pause()
                deadline = time.monotonic() + retry_s
                while time.monotonic() < deadline and not self._stop.is_set():
                    self.poll(0.1)
                continue
            for tp in tps:
                if tp.offset < 0:
                    tp.offset = OFFSET_BEGINNING
                self._consumer.seek(tp)
            self._carry = []
            return

    def _usable(self, message: Message) -> bool:
        err = message.error()
        if err is None:
            return True
        if err.fatal():
            raise KafkaException(err)
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consume error: %s", err.str())
        return False


def _tps(partitions: set[Partition]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(partitions)]
