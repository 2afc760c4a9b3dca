"""Which input offsets may be committed, and committing them.

Only :meth:`OffsetBook.done` moves offsets forward, and the worker calls it only after every
message produced for a batch was acknowledged. Batches are settled in order, so "done" offsets
are always a prefix of each partition: committing them can never skip a record whose outputs
are not on the broker yet. In exactly-once mode a settled batch's offsets go into its Kafka
transaction instead (:meth:`OffsetBook.commit_batch`), never through the consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamer.worker.batch import RawBatch

if TYPE_CHECKING:
    from streamer.worker.outbox import Outbox

__all__ = ["OffsetBook", "Partition", "next_offsets"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]


def next_offsets(batch: RawBatch) -> dict[Partition, int]:
    """Per partition, the offset to commit after ``batch``: one past the highest."""
    out: dict[Partition, int] = {}
    topics = np.array(batch.topics)
    for topic in dict.fromkeys(batch.topics):  # a worker normally reads one topic
        mine = topics == topic
        partitions, offsets = batch.partitions[mine], batch.offsets[mine]
        for partition in np.unique(partitions).tolist():
            out[(topic, partition)] = int(offsets[partitions == partition].max()) + 1
    return out


class OffsetBook:
    """Offsets whose outputs are acknowledged, per partition, and their commits."""

    def __init__(self, consumer: Consumer, transactions: Outbox | None = None) -> None:
        self._consumer = consumer
        self._transactions = transactions  # exactly-once: the outbox whose transactions commit
        self._done: dict[Partition, int] = {}

    def commit_batch(self, offsets: dict[Partition, int], *, wait: bool, budget_s: float) -> None:
        """Commit a settled batch's offsets: in its transaction (exactly-once; raises
        ``BatchAborted`` if the broker refuses), else through the consumer, ``wait``ing for the
        broker's answer (revoke, shutdown) or not (the steady state)."""
        if self._transactions is not None:
            group = self._consumer.consumer_group_metadata()
            self._transactions.commit(_tps(offsets), group, budget_s)
            return
        self.done(offsets)
        if wait:
            self.commit_sync(list(offsets))
        else:
            self.commit_async(offsets)

    def done(self, offsets: dict[Partition, int]) -> None:
        """Record a settled batch: its outputs are acknowledged, its offsets may be committed."""
        for tp, offset in offsets.items():
            self._done[tp] = max(offset, self._done.get(tp, -1))

    def commit_async(self, offsets: dict[Partition, int]) -> None:
        """Commit a settled batch without waiting for the broker.

        A lost async commit is harmless: a later commit carries a higher offset, and revoke and
        shutdown commit everything done synchronously. At worst records are scored twice.
        """
        if offsets:
            self._consumer.commit(offsets=_tps(offsets), asynchronous=True)

    def commit_sync(self, partitions: Iterable[Partition] | None = None) -> bool:
        """Commit what is done for ``partitions`` (default: all) and wait for the broker.

        Returns False when the broker refused (e.g. the group generation moved on during a
        rebalance); those records are then processed again by the partition's next owner.
        """
        wanted = (
            self._done
            if partitions is None
            else {tp: self._done[tp] for tp in partitions if tp in self._done}
        )
        if not wanted:
            return True
        try:
            results = self._consumer.commit(offsets=_tps(wanted), asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed: %s", exc.args[0])
            return False
        failed = [tp for tp in results or [] if tp.error is not None]
        for tp in failed:
            log.warning("offset commit failed for %s[%d]: %s", tp.topic, tp.partition, tp.error)
        return not failed

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop partitions this worker no longer owns."""
        for tp in partitions:
            self._done.pop(tp, None)


def _tps(offsets: dict[Partition, int]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()
    ]
