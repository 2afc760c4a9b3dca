"""The outbox: produce one batch's messages and know when the broker has acknowledged all of them.

At-least-once hinges on this: the worker commits a batch's input offsets only when
:meth:`Outbox.settle` says every message of that batch was acknowledged. A message whose
delivery fails (broker down past ``message.timeout.ms``, a topic that does not exist, a
rejected record) is produced again after a backoff, for as long as the caller keeps settling;
it is never skipped, so the offsets are never committed past it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamer.worker.pipeline import OutMessage

__all__ = ["Outbox", "producer_config"]

log = logging.getLogger(__name__)

# What it takes to produce a message again: topic, key, value, headers.
_Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None
_Record = tuple[str, bytes | None, bytes, _Headers]

# Backoff between re-produce rounds of failed deliveries: long enough not to spin on a broker
# that is down, short enough that a topic created a moment later is used within seconds.
RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)


def producer_config(client: dict[str, str]) -> dict[str, Any]:
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


class Outbox:
    """Tracks the delivery of one batch at a time over one long-lived producer it owns.

    ``config`` is the producer's (see :func:`producer_config`). Only failed deliveries are
    reported back to Python (``delivery.report.only.error``): a callback per acknowledged record
    costs more than producing it, and "everything acknowledged" is simply an empty librdkafka
    queue, because nothing else produces through this producer.
    """

    def __init__(
        self, config: dict[str, Any], *, on_failure: Callable[[KafkaError], None] | None = None
    ) -> None:
        self._producer = Producer(
            {**config, "on_delivery": self._delivered, "delivery.report.only.error": True}
        )
        self._on_failure = on_failure
        self._failed: list[_Record] = []
        self._retries = 0
        self._retry_at = 0.0
        self._last_error = ""

    @property
    def outstanding(self) -> int:
        """Messages produced but neither acknowledged nor failed yet (librdkafka's queue)."""
        return len(self._producer)

    @property
    def settled(self) -> bool:
        """True when every message handed to :meth:`send` has been acknowledged."""
        return len(self._producer) == 0 and not self._failed

    def send(self, messages: Sequence[OutMessage]) -> None:
        """Hand messages to librdkafka; serve delivery reports while its queue is full.

        Blocks only while the local queue is full, and only as long as the broker takes to drain
        it; the worker has paused its partitions by then if that takes long (see worker.py).
        """
        produce = self._producer.produce
        for m in messages:  # per record: keep this loop free of Python calls
            try:
                produce(m.topic, m.value, m.key, headers=m.headers)
            except (BufferError, KafkaException):  # queue full, or a record refused: slow path
                self._produce((m.topic, m.key, m.value, m.headers))
        self._producer.poll(0)

    def settle(self, timeout: float) -> bool:
        """Serve delivery reports for up to ``timeout`` s; re-produce failures after a backoff.

        Returns :attr:`settled`. Never raises on a failed delivery: the caller decides how long
        to keep trying (forever while running, a budget on revoke or shutdown).
        """
        deadline = time.monotonic() + timeout
        while True:
            in_flight = len(self._producer)
            if self._failed and in_flight == 0 and time.monotonic() >= self._retry_at:
                retry, self._failed = self._failed, []
                self._retries += 1
                log.warning(
                    "re-producing %d undelivered messages (last error %s)",
                    len(retry),
                    self._last_error,
                )
                for record in retry:
                    self._produce(record)
            if self.settled:
                self._retries = 0
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if in_flight:
                # flush, unlike poll, sends what lingers at once and returns when all is acked.
                self._producer.flush(min(left, 0.05))
            else:  # only failures waiting out their backoff
                time.sleep(max(0.0, min(left, self._retry_at - time.monotonic(), 0.05)))

    def abandon(self) -> int:
        """Forget failed messages of a batch that will not be committed (its partitions were
        revoked or lost); returns how many. Their input records will be processed again by
        whoever owns the partitions next, so nothing is lost."""
        dropped = len(self._failed)
        self._failed = []
        self._retries = 0
        return dropped

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for what is still queued (stray retries of dropped batches)."""
        self._producer.flush(timeout)

    def _produce(self, record: _Record) -> None:
        topic, key, value, headers = record
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
            except BufferError:  # local queue full: let librdkafka send, then try again
                self._producer.poll(0.05)
                continue
            except KafkaException as exc:  # e.g. a record the client refuses (too large)
                self._fail(exc.args[0], record)
            return

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        """Called for failed deliveries only; the message is rebuilt from its report."""
        if err is not None:
            self._fail(err, (msg.topic() or "", msg.key(), msg.value() or b"", msg.headers()))

    def _fail(self, err: KafkaError, record: _Record) -> None:
        if self._on_failure is not None:
            self._on_failure(err)
        if err.fatal():  # the producer instance is unusable; the worker exits uncommitted
            raise KafkaException(err)
        self._failed.append(record)
        backoff = RETRY_BACKOFF_S[min(self._retries, len(RETRY_BACKOFF_S) - 1)]
        self._retry_at = time.monotonic() + backoff
        self._last_error = f"{record[0]}: {err.str()}"
