"""Scoring the demo's alerts against the dataset's labels (pure functions, unit-tested).

Definitions (event level, as an operator sees alerts):

* An **alert episode** is one ``alert_id``: from its ``firing`` event's ``starts_at`` to its
  ``resolved`` event's ``ends_at`` (or the end of its stream if it never resolved). Its rows are
  the dataset rows of that key whose send time falls in that interval.
* A **labelled segment** is a maximal run of rows labelled 1.
* An episode is a **true positive** if its rows overlap at least one labelled segment.
* **precision** = true-positive episodes / episodes; **recall** = labelled segments overlapped
  by at least one episode / labelled segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from schemas.events import Alert

__all__ = ["AlertScore", "episodes", "score_alerts", "segments"]


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of 1s as ``(start, end)`` row ranges, end exclusive."""
    padded = np.concatenate(([0], np.asarray(labels, dtype=np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def episodes(
    alerts: Iterable[Alert], rows_by_key: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[int, int]]:
    """Each alert episode as an inclusive ``(first_row, last_row)`` range of dataset rows.

    ``rows_by_key[key]`` = (row indices, their send times), both in send order; duplicates of
    an event (at-least-once) collapse on ``alert_id``.
    """
    starts: dict[str, tuple[str, float]] = {}
    ends: dict[str, float] = {}
    for alert in alerts:
        if alert.status == "firing":
            starts[alert.alert_id] = (alert.key, alert.starts_at)
        elif alert.ends_at is not None:
            starts.setdefault(alert.alert_id, (alert.key, alert.starts_at))
            ends[alert.alert_id] = alert.ends_at
    out = []
    for alert_id, (key, start) in starts.items():
        if key not in rows_by_key:
            continue
        rows, ts = rows_by_key[key]
        end = ends.get(alert_id, np.inf)
        first = int(np.searchsorted(ts, start, side="left"))
        last = int(np.searchsorted(ts, end, side="right")) - 1
        if first < len(rows) and last >= first:
            out.append((int(rows[first]), int(rows[min(last, len(rows) - 1)])))
    return sorted(out)


@dataclass(frozen=True, slots=True)
class AlertScore:
    """Event-level precision/recall of alert episodes against labelled segments."""

    episodes: int
    true_positives: int
    segments: int
    segments_found: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.episodes if self.episodes else 0.0

    @property
    def recall(self) -> float:
        return self.segments_found / self.segments if self.segments else 0.0


def score_alerts(found: list[tuple[int, int]], labels: np.ndarray) -> AlertScore:
    """Compare inclusive episode row ranges with the labelled segments of ``labels``."""
    truth = segments(labels)

    def overlaps(ep: tuple[int, int], seg: tuple[int, int]) -> bool:
        return ep[0] < seg[1] and seg[0] <= ep[1]

    tp = sum(any(overlaps(ep, seg) for seg in truth) for ep in found)
    hit = sum(any(overlaps(ep, seg) for ep in found) for seg in truth)
    return AlertScore(len(found), tp, len(truth), hit)
