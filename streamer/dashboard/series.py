"""Per-key score series in fixed ring buffers: what the key charts, the heat map and the key
search read.

The dashboard must stay small with 10,000 keys at tens of thousands of records a second, so it
never keeps score events. Each key owns one row of five preallocated numpy arrays of
``history_s / bucket_s`` slots (360 with the defaults: an hour of 10 s buckets). A slot is one
bucket of event time and holds four numbers: score events in it, how many were flagged, the
largest score, and the threshold of its last event; plus the bucket it holds (a slot is reused
when its bucket is one ``history_s`` old). That is 20 bytes a slot, 7.2 kB a key: 72 MB for
10,000 keys whatever the record rate. Rows are allocated 1,024 keys at a time up to
``max_keys``; past that, the least recently seen keys' rows are reused.

Time is the records' event time (``ts``), so a replay of old data draws where it happened; a
record older than the oldest bucket its key still holds is not drawn.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BYTES_PER_SLOT", "KeySeries", "ScoreBatch"]

_EMPTY = np.iinfo(np.int32).min  # the stamp of a slot that holds no bucket
_CHUNK = 1024  # rows added at a time
BYTES_PER_SLOT = 4 + 4 + 4 + 4 + 4  # stamp, events, flagged, largest score, threshold


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """Score events as columns (one entry per event)."""

    keys: Sequence[str]
    ts: np.ndarray  # float64 event time, epoch seconds
    score: np.ndarray  # float64
    threshold: np.ndarray  # float64
    anomalous: np.ndarray  # bool


class KeySeries:
    """Downsampled score and threshold per key over the last ``history_s`` (module docstring).

    Not thread-safe: the dashboard's state holds one lock around it.
    """

    def __init__(
        self,
        *,
        history_s: float,
        bucket_s: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket_s = float(bucket_s)
        self.slots = math.ceil(history_s / bucket_s)
        self.max_keys = max_keys
        self._clock = clock
        # Stamps are int32 bucket numbers relative to a base near now: half the int32 range on
        # either side is some 680 years of 10 s buckets, and half the bytes of int64.
        self._base = int(time.time() // self.bucket_s) - 2**30
        self._index: dict[str, int] = {}
        self._names: list[str] = []  # row -> key ("" for a free row)
        self._free: list[int] = []  # free rows, lowest last
        self._allocate(0)

    # Writing ----------------------------------------------------------------------------------

    def add(self, batch: ScoreBatch) -> None:
        """Fold a batch of score events into the buckets."""
        if not len(batch.keys):
            return
        rows, keep = self._rows(batch.keys)
        bucket = np.floor(batch.ts[keep] / self.bucket_s).astype(np.int64) - self._base
        bucket = np.clip(bucket, _EMPTY + 1, np.iinfo(np.int32).max).astype(np.int32)
        slot = bucket % self.slots
        # A slot moving on to a newer bucket starts empty; older events than its bucket are
        # dropped (the slot now holds a bucket an hour later).
        before = self.stamp[rows, slot].copy()
        np.maximum.at(self.stamp, (rows, slot), bucket)
        after = self.stamp[rows, slot]
        moved = after != before
        r, s = rows[moved], slot[moved]
        self.events[r, s] = 0
        self.flagged[r, s] = 0
        self.peak[r, s] = -np.inf
        self.threshold[r, s] = np.nan
        fits = bucket == after
        r, s = rows[fits], slot[fits]
        np.add.at(self.events, (r, s), 1)
        np.add.at(self.flagged, (r, s), batch.anomalous[keep][fits].astype(np.uint32))
        np.maximum.at(self.peak, (r, s), batch.score[keep][fits].astype(np.float32))
        # The threshold of each slot's last event: numpy leaves repeated fancy assignments in
        # no promised order, so take each slot's last position explicitly.
        flat = (r.astype(np.int64) * self.slots + s)[::-1]
        _, last = np.unique(flat, return_index=True)
        pos = len(flat) - 1 - last
        self.threshold[r[pos], s[pos]] = batch.threshold[keep][fits][pos].astype(np.float32)
        np.maximum.at(self.newest, rows, bucket)

    def _rows(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row per event (new keys get rows, reusing the least recently seen past
        ``max_keys``), and which events are kept (a batch with more than ``max_keys`` distinct
        keys keeps the first ``max_keys`` of them)."""
        index, now = self._index, self._clock()
        new = list(dict.fromkeys(k for k in keys if k not in index))
        distinct = len(set(keys))
        if distinct > self.max_keys:
            allowed = set(list(dict.fromkeys(keys))[: self.max_keys])
            new = [k for k in new if k in allowed]
        else:
            allowed = None
        if new:
            self._place(new, batch_keys=keys)
        keep = np.fromiter(
            (allowed is None or k in allowed for k in keys), dtype=bool, count=len(keys)
        )
        rows = np.fromiter(
            (index[k] for k, ok in zip(keys, keep, strict=True) if ok), dtype=np.int64
        )
        self.seen[rows] = now
        return rows, keep

    def _place(self, new: list[str], *, batch_keys: Sequence[str]) -> None:
        if len(self._free) < len(new) and len(self._names) < self.max_keys:
            grow = max(len(new) - len(self._free), _CHUNK)
            self._allocate(min(self.max_keys, len(self._names) + grow))
        short = len(new) - len(self._free)
        if short > 0:
            seen = self.seen.copy()
            in_batch = [self._index[k] for k in set(batch_keys) if k in self._index]
            seen[in_batch] = np.inf  # never evict a key this very batch writes to
            for row in np.argpartition(seen, short - 1)[:short].tolist():
                del self._index[self._names[row]]
                self._clear(row)
        for key in new:
            row = self._free.pop()
            self._index[key] = row
            self._names[row] = key
            self.live[row] = True

    def _allocate(self, capacity: int) -> None:
        """Grow every array to ``capacity`` rows, keeping the rows in use."""
        old = len(self._names)
        shape = (capacity, self.slots)

        def grown(name: str, fill: float, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
            array: np.ndarray = np.full(shape, fill, dtype)
            if old:
                array[:old] = getattr(self, name)[:old]
            return array

        self.stamp = grown("stamp", _EMPTY, np.int32, shape)
        self.events = grown("events", 0, np.uint32, shape)
        self.flagged = grown("flagged", 0, np.uint32, shape)
        self.peak = grown("peak", -np.inf, np.float32, shape)
        self.threshold = grown("threshold", np.nan, np.float32, shape)
        self.newest = grown("newest", _EMPTY, np.int32, (capacity,))
        self.seen = grown("seen", 0.0, np.float64, (capacity,))
        self.live = grown("live", False, bool, (capacity,))
        self._names += [""] * (capacity - old)
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free

    def _clear(self, row: int) -> None:
        self._names[row] = ""
        self.live[row] = False
        self._free.append(row)
        self.stamp[row] = _EMPTY
        self.events[row] = 0
        self.flagged[row] = 0
        self.peak[row] = -np.inf
        self.threshold[row] = np.nan
        self.newest[row] = _EMPTY

    # Reading ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the bulk of the dashboard's memory)."""
        arrays = (self.stamp, self.events, self.flagged, self.peak, self.threshold)
        rows = self.newest.nbytes + self.seen.nbytes + self.live.nbytes
        return sum(a.nbytes for a in arrays) + rows

    def _epoch(self, stamp: np.ndarray) -> np.ndarray:
        return (stamp.astype(np.int64) + self._base) * self.bucket_s

    def points(self, key: str) -> dict[str, list[Any]] | None:
        """``key``'s buckets over the ``history_s`` before its newest one, oldest first:
        bucket start (epoch s), largest score, threshold, events and flagged events."""
        row = self._index.get(key)
        if row is None:
            return None
        stamp = self.stamp[row]
        valid = (stamp != _EMPTY) & (stamp > int(self.newest[row]) - self.slots)
        order = np.argsort(stamp[valid], kind="stable")
        pick = np.flatnonzero(valid)[order]
        return {
            "t": self._epoch(stamp[pick]).tolist(),
            "score": _floats(self.peak[row, pick]),
            "threshold": _floats(self.threshold[row, pick]),
            "events": self.events[row, pick].tolist(),
            "flagged": self.flagged[row, pick].tolist(),
        }

    def search(self, query: str, limit: int = 20) -> list[str]:
        """Keys containing ``query`` (case-insensitive): those starting with it first, then
        the rest, each group sorted; at most ``limit``."""
        q = query.strip().lower()
        if not q:
            return []
        starts, contains = [], []
        for key in self._index:
            low = key.lower()
            if low.startswith(q):
                starts.append(key)
            elif q in low:
                contains.append(key)
        return (sorted(starts) + sorted(contains))[:limit]

    def heatmap(self, *, rows: int = 20, columns: int = 60) -> dict[str, Any]:
        """The swimlane: the ``rows`` keys with the most flagged events over the last
        ``history_s`` of event time (ties: the largest score above its threshold), each as
        ``columns`` cells of flagged counts and largest scores."""
        live = np.flatnonzero(self.live)
        empty: dict[str, Any] = {"start": None, "column_s": None, "keys": []}
        if not len(live):
            return {**empty, "flagged": [], "peak": [], "totals": []}
        newest = int(self.newest[live].max())
        start = newest - self.slots + 1
        stamp = self.stamp[live]
        valid = (stamp >= start) & (stamp <= newest)
        flagged = np.where(valid, self.flagged[live], 0)
        totals = flagged.sum(axis=1).astype(np.int64)
        margin = np.where(
            valid & (self.events[live] > 0), self.peak[live] - self.threshold[live], -np.inf
        )
        margin = np.nan_to_num(margin, nan=-np.inf).max(axis=1)
        order = np.lexsort((-margin, -totals))[:rows]
        col = np.clip(((stamp[order] - start).astype(np.int64) * columns) // self.slots, 0, None)
        col = np.minimum(col, columns - 1)
        cells = np.zeros((len(order), columns), np.int64)
        peaks = np.full((len(order), columns), -np.inf)
        which = np.repeat(np.arange(len(order)), self.slots).reshape(len(order), self.slots)
        ok = valid[order]
        np.add.at(cells, (which[ok], col[ok]), flagged[order][ok])
        np.maximum.at(peaks, (which[ok], col[ok]), self.peak[live][order][ok])
        return {
            "start": float(self._epoch(np.array([start]))[0]),
            "column_s": self.slots * self.bucket_s / columns,
            "keys": [self._names[live[i]] for i in order.tolist()],
            "flagged": cells.tolist(),
            "peak": [_floats(p) for p in peaks],
            "totals": totals[order].tolist(),
        }


def _floats(values: np.ndarray) -> list[float | None]:
    """JSON-safe floats: NaN and infinities (empty buckets) become null."""
    return [v if math.isfinite(v) else None for v in values.astype(np.float64).tolist()]
