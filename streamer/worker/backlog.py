"""Records judged while Redis could not be used, held until their state is applied.

The policy (docs/worker.md, "Redis outage"): a batch judged degraded still publishes its score
events at once (``degraded: true``, thresholds from the worker's cache), but its input offsets
are not committed, because the shared state still owes it something: its statistics and, above
all, its alert transitions. The backlog keeps such batches' verdict requests in order, with the
offsets to commit after each. When Redis answers again, :meth:`Backlog.catch_up` applies them
(the script counts every offset once, so a replay is harmless), and the worker produces the
alerts they cause and commits. An incident that begins during an outage therefore fires when
Redis is back: late, never lost. A batch that comes after a held one is held too, since a
commit covers every offset before it; if the worker dies meanwhile, the uncommitted records are
consumed and judged again. The backlog is bounded (``worker.max_held_records``); when full, the
worker pauses its partitions until Redis is back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from streamer.worker.batch import OutMessage
from streamer.worker.offsets import Partition
from streamer.worker.pipeline import VerdictRequest, VerdictSource

__all__ = ["Backlog", "CaughtUp"]


@dataclass(slots=True)
class _Held:
    requests: list[VerdictRequest]
    offsets: dict[Partition, int]


@dataclass(slots=True)
class CaughtUp:
    """What applying held batches produced: their alerts, and the offsets now committable."""

    messages: list[OutMessage] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)
    records: int = 0
    alerts: Counter[str] = field(default_factory=Counter)  # transitions by status


class Backlog:
    """Held batches, oldest first. ``limit`` bounds the records held (memory)."""

    def __init__(self, limit: int) -> None:
        self._held: list[_Held] = []
        self._limit = limit

    def __bool__(self) -> bool:
        return bool(self._held)

    @property
    def records(self) -> int:
        return sum(len(r) for held in self._held for r in held.requests)

    @property
    def full(self) -> bool:
        return self.records >= self._limit

    def hold(self, requests: list[VerdictRequest], offsets: dict[Partition, int]) -> None:
        """Keep a batch: its unjudged requests (none if Redis took it) and its offsets."""
        self._held.append(_Held(list(requests), dict(offsets)))

    def forget(self, partitions: list[Partition]) -> int:
        """Drop what belongs to partitions this worker no longer owns (their next owner
        consumes the uncommitted records again); returns the records dropped.

        A worker reads one input topic, so a held record's partition number names it.
        """
        gone = set(partitions)
        numbers = [partition for _, partition in gone]
        dropped = 0
        for held in self._held:
            kept = []
            for request in held.requests:
                mine = ~np.isin(request.partitions, numbers)
                dropped += int((~mine).sum())
                if mine.any():
                    kept.append(request if mine.all() else request.only(mine))
            held.requests = kept
            held.offsets = {tp: o for tp, o in held.offsets.items() if tp not in gone}
        self._held = [h for h in self._held if h.requests or h.offsets]
        return dropped

    def catch_up(self, source: VerdictSource, alerts_topic: str) -> CaughtUp:
        """Apply held batches in order while Redis takes them; stop at the first that comes
        back degraded (it stays held, and what of it was applied is applied again later)."""
        done = CaughtUp()
        while self._held:
            held = self._held[0]
            verdicts = [request.apply(source) for request in held.requests]
            if any(v.degraded for v in verdicts):
                break
            self._held.pop(0)
            done.records += sum(len(r) for r in held.requests)
            for alert in (a for v in verdicts for a in v.alerts):
                done.messages.append(
                    OutMessage(
                        "alert", alerts_topic, alert.key.encode(), alert.model_dump_json().encode()
                    )
                )
                done.alerts[alert.status] += 1
            for tp, offset in held.offsets.items():
                done.offsets[tp] = max(offset, done.offsets.get(tp, -1))
        return done
