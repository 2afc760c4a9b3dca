"""The demo's alerts as episodes in dataset rows, judged by the stream evaluation's metrics
(streamer/evaluation/metrics.py, docs/stream-eval.md), so that the demo and
`ama-stream eval --suites streams` count precision, recall and delay the same way.

The demo reads the alerts topic as any consumer would: an episode is one ``alert_id``, from its
``starts_at`` to its ``resolved`` event's ``ends_at`` (or the end of its stream if it never
resolved), and its rows are the rows of that key whose send time falls in that interval. The
event does not say which record made it fire, so the demo takes its first anomalous record:
exact when one record far above its threshold fired it (``alerts.fire_ratio``), otherwise up to
``alerts.window_m`` records early, which flatters the demo's delay and precision a little.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from schemas.events import Alert
from streamer.evaluation.metrics import Episode

__all__ = ["episodes"]


def episodes(
    alerts: Iterable[Alert], rows_by_key: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> list[Episode]:
    """Each alert episode in dataset rows, ordered by its first row.

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
            row = int(rows[first])
            out.append(Episode(row, row, int(rows[min(last, len(rows) - 1)])))
    return sorted(out, key=lambda e: e.start)
