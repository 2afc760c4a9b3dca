"""What an on-call engineer and a detector comparison need from one replayed stream.

Event-level metrics judge the alert *episodes* the worker emitted against labelled anomalous
*segments*; they depend on the threshold and the alert policy. The threshold-free metrics
(point-wise AUROC/AUPRC and VUS-PR) judge the score alone, so detectors can be compared apart
from the alert rule. Everything here is a pure function of arrays (docs/stream-eval.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Episode",
    "EventMetrics",
    "event_metrics",
    "point_metrics",
    "segments",
    "vus_pr",
]

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Episode:
    """One alert episode in row positions of the stream.

    ``start``: the episode's first anomalous record (the alert's ``starts_at``); ``fired``: the
    record whose verdict made it fire (when the on-call is paged); ``end``: the record that
    resolved it, or the last row when it was still firing at the end of the stream.
    """

    start: int
    fired: int
    end: int


@dataclass(frozen=True, slots=True)
class EventMetrics:
    """Episodes against segments: precision over episodes, recall over segments."""

    episodes: int
    true_episodes: int
    segments: int
    detected_segments: int
    delays_rows: tuple[int, ...]  # per detected segment: its first firing minus its first row
    delays_s: tuple[float, ...]
    false_per_day: float  # false episodes per day of normal traffic

    @property
    def precision(self) -> float:
        """Share of episodes that fired inside a labelled segment (1.0 when nothing fired: no
        false page; the missed segments show up in recall)."""
        return self.true_episodes / self.episodes if self.episodes else 1.0

    @property
    def recall(self) -> float:
        return self.detected_segments / self.segments if self.segments else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of 1s as inclusive ``(first, last)`` row positions."""
    y = np.asarray(labels, np.int8).ravel()
    edges = np.diff(np.concatenate(([0], y, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def event_metrics(episodes: list[Episode], labels: np.ndarray, ts: np.ndarray) -> EventMetrics:
    """Match episodes to labelled segments by where they *fire*.

    An episode is true when it fires inside a segment (first to last row): that page was about
    the incident. One that fires outside every segment is false, however long it then lasts, so
    an alert left firing across a whole stream is one false page, not a catch. A segment is
    detected when an episode fires inside it; its delay is the first such firing minus the
    segment's first row. ``ts`` (seconds, one per row) turns delays into seconds and normal
    rows into days.
    """
    segs = segments(labels)
    ts = np.asarray(ts, np.float64)
    fired = np.asarray(sorted(ep.fired for ep in episodes), np.int64)
    true = 0
    delays_rows: list[int] = []
    delays_s: list[float] = []
    for first, last in segs:
        inside = fired[(fired >= first) & (fired <= last)]
        true += len(inside)
        if len(inside):
            delays_rows.append(int(inside[0]) - first)
            delays_s.append(float(ts[inside[0]] - ts[first]))
    normal_days = _normal_seconds(labels, ts) / SECONDS_PER_DAY
    false = len(episodes) - true
    return EventMetrics(
        episodes=len(episodes),
        true_episodes=true,
        segments=len(segs),
        detected_segments=len(delays_rows),
        delays_rows=tuple(delays_rows),
        delays_s=tuple(delays_s),
        false_per_day=false / normal_days if normal_days > 0 else float("nan"),
    )


def _normal_seconds(labels: np.ndarray, ts: np.ndarray) -> float:
    """Time covered by normal rows: each row stands for the median sampling interval."""
    if len(ts) < 2:
        return 0.0
    step = float(np.median(np.diff(ts)))
    return float(np.sum(np.asarray(labels) == 0)) * step


def point_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Point-wise AUROC and AUPRC (average precision), anomaly = positive class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(labels, np.int8)
    if y.min() == y.max():  # one class only: undefined
        return {"auroc": float("nan"), "auprc": float("nan")}
    s = _finite(scores)
    return {"auroc": float(roc_auc_score(y, s)), "auprc": float(average_precision_score(y, s))}


def _finite(scores: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, posinf=1e300, neginf=-1e300)


def vus_pr(
    scores: np.ndarray, labels: np.ndarray, *, max_buffer: int, buffers: int = 5, steps: int = 100
) -> float:
    """Volume under the range-based PR surface, after Paparrizos et al., "Volume Under the
    Surface", VLDB 2022 (our own implementation of the idea, docs/stream-eval.md).

    For each buffer length ``b`` in ``buffers`` values from 0 to ``max_buffer``, every segment's
    label is extended by a ramp falling linearly from 1 to 0 over ``b`` rows on both sides, so
    that an alarm just before or after a labelled segment earns partial credit instead of none
    (labels mark the start and end of an incident only roughly). On that soft label, for
    ``steps`` score thresholds (quantiles of the scores): precision = credited alarms / alarms;
    recall = credited label mass found / label mass, times the share of segments with at least
    one alarm in their buffered range (the existence reward). The area under each PR curve
    (step-wise, as average precision) is averaged over the buffers.
    """
    y = np.asarray(labels, np.int8).ravel()
    s = _finite(scores).ravel()
    segs = segments(y)
    if not segs or len(segs) == len(y):
        return float("nan")
    cuts = np.unique(np.quantile(s, np.linspace(0.0, 1.0, steps, endpoint=False)))[::-1]
    areas = []
    for b in np.unique(np.linspace(0, max_buffer, buffers).round().astype(int)):
        soft = _soft_labels(len(y), segs, int(b))
        ranges = [(max(0, f - b), min(len(y) - 1, last + b)) for f, last in segs]
        prec, rec = [], []
        for cut in cuts:
            alarm = s >= cut
            n_alarm = int(alarm.sum())
            credit = float(soft[alarm].sum())
            found = sum(bool(alarm[f : last + 1].any()) for f, last in ranges) / len(ranges)
            prec.append(credit / n_alarm if n_alarm else 1.0)
            rec.append(credit / float(soft.sum()) * found)
        r = np.maximum.accumulate(np.asarray(rec))  # thresholds fall: recall can only grow
        areas.append(float(np.sum(np.diff(np.concatenate(([0.0], r))) * np.asarray(prec))))
    return float(np.mean(areas))


def _soft_labels(n: int, segs: list[tuple[int, int]], b: int) -> np.ndarray:
    soft = np.zeros(n, np.float64)
    for first, last in segs:
        soft[first : last + 1] = 1.0
        for d in range(1, b + 1):
            w = 1.0 - d / (b + 1)
            if first - d >= 0:
                soft[first - d] = max(soft[first - d], w)
            if last + d < n:
                soft[last + d] = max(soft[last + d], w)
    return soft
