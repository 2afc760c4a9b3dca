"""The outbox: produce one batch's messages and know when the broker has acknowledged all of them.

At-least-once hinges on this: the worker commits a batch's input offsets only when
:meth:`Outbox.settle` says every message of that batch was acknowledged. A message whose
delivery fails (broker down past ``message.timeout.ms``, a topic that does not exist, a
rejected record) is produced again after a backoff, for as long as the caller keeps settling;
it is never skipped, so the offsets are never committed past it.

Delivery results belong to the batch that produced them (:class:`Delivery`): a batch the
worker gave up on (its partitions were revoked; their next owner processes the records again)
is abandoned, and a failure of it that is reported later is dropped and counted, never produced
again behind the newer events of the same keys.

In exactly-once mode (``transactional_id`` set) every batch is one Kafka transaction: its
outputs and its input offsets are committed together (:meth:`Outbox.commit`, KIP-447: the
consumer's group metadata fences a worker that was kicked out of the group). A failed delivery
cannot be re-produced inside a transaction: the transaction is aborted and
:class:`BatchAborted` tells the worker to process the batch again from its committed offsets.

The producer can be lost for good: librdkafka can wait for ever for the group coordinator when
sending the offsets, whatever the timeout (confluentinc/librdkafka#5456, #5511), and a broker
that aborted a transaction on its timeout while it restarted fences the producer (an old
epoch). Both were met in the chaos suite's broker restarts. :class:`ProducerLost` then ends the
worker, which is safe: nothing of the open batch was committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.errors import AmaStreamError
from streamer.worker.batch import OutMessage

__all__ = ["BatchAborted", "Delivery", "Outbox", "ProducerLost", "producer_config"]

log = logging.getLogger(__name__)

# What it takes to produce a message again: topic, key, value, headers.
_Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None
_Record = tuple[str, bytes | None, bytes, _Headers]

# Backoff between re-produce rounds of failed deliveries: long enough not to spin on a broker
# that is down, short enough that a topic created a moment later is used within seconds.
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)

#: How long a transaction may stay open before the broker aborts it. A worker that dies mid-batch
#: leaves its transaction open, and read_committed consumers of the output topics wait behind it
#: until then (librdkafka's default is 60 s); a batch's transaction lasts milliseconds.
TRANSACTION_TIMEOUT_MS = 10_000

#: How long past its own timeout a transactional call may take before it counts as stuck.
STUCK_GRACE_S = 5.0


class BatchAborted(AmaStreamError):
    """A batch's transaction was aborted (a failed delivery, a fenced or stale group member):
    none of its outputs or offsets are committed; the worker processes it again."""


class ProducerLost(RuntimeError):
    """The producer failed for good (a fatal error, or a transactional call that did not
    return within its timeout): it can neither be used nor closed again, so the process ends
    and a restarted worker takes over (the broker aborts an open transaction)."""


def producer_config(client: dict[str, Any]) -> dict[str, Any]:
    """Producer options on top of the shared client options (``client`` wins, so raw
    ``kafka.extra`` options can override any of these).

    Idempotence gives acks=all and in-order, de-duplicated retries inside librdkafka, so a
    retried batch never reorders a key's score events. ``linger.ms`` of 5 lets librdkafka fill
    produce requests while a micro-batch is handed over; :meth:`Outbox.settle` then flushes, so
    the batch's last request does not wait out the linger.
    """
    return {
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        **client,
    }


class Delivery:
    """The outputs of one batch on their way: what failed, and whether it was given up."""

    def __init__(self, on_failure: Callable[[KafkaError, bool], None] | None) -> None:
        self.failed: list[_Record] = []
        self.abandoned = False
        self.retries = 0
        self.retry_at = 0.0
        self.last_error = ""
        self._on_failure = on_failure

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report (failed deliveries only); the message is rebuilt from
        it so that it can be produced again."""
        if err is None:
            return
        self.fail(err, (msg.topic() or "", msg.key(), msg.value() or b"", msg.headers()))

    def fail(self, err: KafkaError, record: _Record) -> None:
        """``on_failure(err, abandoned)`` hears of every failure; one of an abandoned batch is
        dropped."""
        if self._on_failure is not None:
            self._on_failure(err, self.abandoned)
        if err.fatal():  # the producer instance is unusable; the worker exits uncommitted
            raise ProducerLost(f"the producer failed for good: {err.str()}")
        if self.abandoned:
            return
        self.failed.append(record)
        self.retry_at = (
            time.monotonic() + RETRY_BACKOFF_S[min(self.retries, len(RETRY_BACKOFF_S) - 1)]
        )
        self.last_error = f"{record[0]}: {err.str()}"


class Outbox:
    """Produces batches over one long-lived producer it owns, one :class:`Delivery` each.

    ``config`` is the producer's (see :func:`producer_config`). Only failed deliveries are
    reported back to Python (``delivery.report.only.error``): a callback per acknowledged record
    costs more than producing it, and "everything acknowledged" is simply an empty librdkafka
    queue, because nothing else produces through this producer.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        on_failure: Callable[[KafkaError, bool], None] | None = None,
        transactional_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        extra: dict[str, Any] = {}
        if transactional_id is not None:
            extra = {"transactional.id": transactional_id,
                     "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}  # fmt: skip
        # ``config`` last: kafka.extra may name a stable transactional.id (a StatefulSet's pod
        # name), so a restarted worker aborts its predecessor's open transaction at once.
        self._producer = Producer({"delivery.report.only.error": True, **extra, **config})
        self._on_failure = on_failure
        self.transactional = transactional_id is not None
        if self.transactional:
            self._producer.init_transactions(timeout_s)

    @property
    def outstanding(self) -> int:
        """Messages produced but neither acknowledged nor failed yet (librdkafka's queue)."""
        return len(self._producer)

    def send(self, messages: Sequence[OutMessage]) -> Delivery:
        """Hand one batch's messages to librdkafka; serve delivery reports while its queue is
        full. Blocks only while the local queue is full, and only as long as the broker takes to
        drain it; the worker has paused its partitions by then if that takes long."""
        delivery = Delivery(self._on_failure)
        if self.transactional:
            self._producer.begin_transaction()
        report = delivery.report
        produce = self._producer.produce
        for m in messages:  # per record: keep this loop free of Python calls
            try:
                produce(m.topic, m.value, m.key, headers=m.headers, on_delivery=report)
            except (BufferError, KafkaException):  # queue full, or a record refused: slow path
                self._produce(delivery, (m.topic, m.key, m.value, m.headers))
        self._producer.poll(0)
        return delivery

    def settle(self, delivery: Delivery, timeout: float) -> bool:
        """Serve delivery reports for up to ``timeout`` s; re-produce ``delivery``'s failures
        after a backoff, in the order they were reported. True once every message of it (and
        of any batch before it) is acknowledged. Never raises on a failed delivery: the caller
        decides how long to keep trying (forever while running, a budget on revoke or
        shutdown)."""
        deadline = time.monotonic() + timeout
        while True:
            in_flight = len(self._producer)
            if delivery.failed and self.transactional:
                self.abort()
                raise BatchAborted(f"a delivery failed: {delivery.last_error}")
            if delivery.failed and in_flight == 0 and time.monotonic() >= delivery.retry_at:
                retry, delivery.failed = delivery.failed, []
                delivery.retries += 1
                log.warning(
                    "re-producing %d undelivered messages (last error %s)",
                    len(retry),
                    delivery.last_error,
                )
                for record in retry:
                    self._produce(delivery, record)
                continue  # in_flight is stale now: the re-produced messages are in the queue
            if in_flight == 0 and not delivery.failed:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if in_flight:
                # flush, unlike poll, sends what lingers at once and returns when all is acked.
                self._producer.flush(min(left, 0.05))
            else:  # only failures waiting out their backoff
                time.sleep(max(0.0, min(left, delivery.retry_at - time.monotonic(), 0.05)))

    def commit(self, offsets: list[TopicPartition], group: Any, timeout: float) -> None:
        """Exactly-once mode: commit the open transaction (a batch whose outputs
        :meth:`settle` saw acknowledged) together with its input ``offsets`` for the consumer
        group ``group`` (``Consumer.consumer_group_metadata()``). Raises :class:`BatchAborted`
        when the broker refuses (the transaction is aborted then), :class:`ProducerLost` on a
        fatal error (a fenced producer) or a call that never returns."""
        deadline = time.monotonic() + timeout
        try:
            _within(timeout, self._producer.send_offsets_to_transaction, offsets, group, timeout)
            while True:
                try:
                    self._producer.commit_transaction(max(0.1, deadline - time.monotonic()))
                    return
                except KafkaException as exc:
                    if not exc.args[0].retriable() or time.monotonic() >= deadline:
                        raise
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal():
                raise ProducerLost(f"the producer failed for good: {err.str()}") from exc
            # Abortable (a failed delivery, a stale group generation) or out of time: nothing
            # of the batch is committed; abort so that the producer can start the next one.
            self.abort()
            raise BatchAborted(f"transaction not committed: {err.str()}") from exc

    def abort(self) -> None:
        """Exactly-once mode: abort the open transaction (nothing of it becomes visible to
        read_committed consumers)."""
        try:
            self._producer.abort_transaction(30.0)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise ProducerLost(f"the producer failed for good: {exc.args[0].str()}") from exc
            log.warning("aborting a transaction failed: %s", exc.args[0].str())

    @staticmethod
    def abandon(delivery: Delivery) -> int:
        """Give up on a batch that will not be committed (its partitions were revoked or lost):
        its failures so far are forgotten and later ones dropped; returns how many were
        forgotten. Its input records will be processed again by the partitions' next owner."""
        delivery.abandoned = True
        forgotten = len(delivery.failed)
        delivery.failed = []
        return forgotten

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for what is still queued (stray messages of abandoned
        batches)."""
        self._producer.flush(timeout)

    def _produce(self, delivery: Delivery, record: _Record) -> None:
        topic, key, value, headers = record
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=delivery.report
                )
            except BufferError:  # local queue full: let librdkafka send, then try again
                self._producer.poll(0.05)
                continue
            except KafkaException as exc:  # e.g. a record the client refuses (too large)
                delivery.fail(exc.args[0], record)
            return


def _within(timeout_s: float, call: Callable[..., None], *args: Any) -> None:
    """``call(*args)`` on a helper thread, raising :class:`ProducerLost` if it has not
    returned ``STUCK_GRACE_S`` after ``timeout_s`` (the call itself cannot be cancelled)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call(*args)
        except BaseException as exc:  # handed to the caller's thread below
            raised.append(exc)

    thread = threading.Thread(target=run, name="ama-txn-offsets", daemon=True)
    thread.start()
    thread.join(timeout_s + STUCK_GRACE_S)
    if thread.is_alive():
        raise ProducerLost(
            f"librdkafka did not return from send_offsets_to_transaction within {timeout_s:.0f} s"
            " (confluentinc/librdkafka#5456)"
        )
    if raised:
        raise raised[0]
