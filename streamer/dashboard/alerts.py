"""Alert episodes as the alerts topic tells them, with the features that drove them.

The topic carries at-least-once Alertmanager-style transitions (docs/contracts.md): a ``firing``
message when an episode starts (again if it is re-announced), one ``resolved`` at its end, both
with the episode's ``alert_id``. :class:`AlertBook` keeps the firing episode of each key and the
last ``resolved_kept`` resolved ones, de-duplicated by ``(alert_id, status)``, so replays and
re-announcements change nothing on the page.

Alerts do not say which features drove them; score events do (``top_features`` of each flagged
record). The book keeps the last :data:`ANOMALIES_KEPT` flagged events per key (least recently
flagged keys dropped past ``max_keys``) and ranks an episode's features by how often they were
among the top ones of its flagged records.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["ANOMALIES_KEPT", "AlertBook", "parse_alert"]

ANOMALIES_KEPT = 64  # flagged events kept per key: more than any alert window needs
_FIELDS = ("alert_id", "key", "status", "starts_at", "peak_score", "threshold", "n_anomalous")


def parse_alert(doc: Any) -> dict[str, Any] | None:
    """The fields the page shows, from one decoded alert message; None if it is not one."""
    if not isinstance(doc, dict) or any(f not in doc for f in _FIELDS):
        return None
    if doc["status"] not in ("firing", "resolved"):
        return None
    try:
        return {
            "alert_id": str(doc["alert_id"]),
            "key": str(doc["key"]),
            "status": doc["status"],
            "starts_at": float(doc["starts_at"]),
            "ends_at": None if doc.get("ends_at") is None else float(doc["ends_at"]),
            "peak_score": float(doc["peak_score"]),
            "threshold": float(doc["threshold"]),
            "n_anomalous": int(doc["n_anomalous"]),
            "severity": str(doc.get("severity", "warning")),
            "model_version": str(doc.get("model_version", "")),
            "labels": {str(k): str(v) for k, v in dict(doc.get("labels") or {}).items()},
        }
    except (TypeError, ValueError):
        return None


class AlertBook:
    """Firing and recently resolved episodes, and per-key flagged events (module docstring).

    Not thread-safe: the dashboard's state holds one lock around it.
    """

    def __init__(
        self, *, resolved_kept: int, max_keys: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._firing: dict[str, dict[str, Any]] = {}  # key -> its open episode
        self._resolved: OrderedDict[str, dict[str, Any]] = OrderedDict()  # alert_id -> episode
        self._resolved_kept = resolved_kept
        self._max_keys = max_keys
        self._flagged: OrderedDict[str, deque[tuple[float, float, tuple[int, ...]]]] = OrderedDict()
        self._clock = clock

    # Writing ----------------------------------------------------------------------------------

    def add_alert(self, alert: dict[str, Any]) -> bool:
        """Apply one transition; True if it changed what the page shows."""
        alert_id, key = alert["alert_id"], alert["key"]
        entry = {**alert, "seen_at": self._clock()}
        if alert["status"] == "resolved":
            if alert_id in self._resolved:
                return False
            if self._firing.get(key, {}).get("alert_id") == alert_id:
                del self._firing[key]
            self._resolved[alert_id] = entry
            while len(self._resolved) > self._resolved_kept:
                self._resolved.popitem(last=False)
            return True
        if alert_id in self._resolved:
            return False  # a late re-announcement of an episode already over
        current = self._firing.get(key)
        if current is not None and current["alert_id"] == alert_id:
            if alert["n_anomalous"] <= current["n_anomalous"]:
                return False  # a replayed copy
            entry["seen_at"] = current["seen_at"]  # an update keeps its place
        elif current is None and len(self._firing) >= self._max_keys:
            oldest = min(self._firing.values(), key=lambda a: a["starts_at"])
            del self._firing[oldest["key"]]
        self._firing[key] = entry
        return True

    def add_flagged(self, events: Iterable[tuple[str, float, float, tuple[int, ...]]]) -> None:
        """Remember flagged score events: (key, ts, score, top feature indices)."""
        book = self._flagged
        for key, ts, score, features in events:
            kept = book.get(key)
            if kept is None:
                kept = book[key] = deque(maxlen=ANOMALIES_KEPT)
                if len(book) > self._max_keys:
                    book.popitem(last=False)
            else:
                book.move_to_end(key)
            kept.append((ts, score, features))

    # Reading ----------------------------------------------------------------------------------

    @property
    def firing_count(self) -> int:
        return len(self._firing)

    def features(self, key: str, start: float, end: float | None, top: int = 3) -> list[Any]:
        """The features most often among the top ones of ``key``'s flagged events in
        [start, end]: ``[{"feature": index, "count": n}, ...]``, most frequent first."""
        counts: Counter[int] = Counter()
        for ts, _, features in self._flagged.get(key, ()):
            if ts >= start and (end is None or ts <= end):
                counts.update(features)
        return [{"feature": f, "count": n} for f, n in counts.most_common(top)]

    def _view(self, entry: dict[str, Any], now: float) -> dict[str, Any]:
        end = entry["ends_at"]
        return {
            **entry,
            "duration_s": max(0.0, (now if end is None else end) - entry["starts_at"]),
            "features": self.features(entry["key"], entry["starts_at"], end),
        }

    def view(self) -> dict[str, list[dict[str, Any]]]:
        """Firing episodes (newest start first) and resolved ones (most recently resolved
        first), each with its duration so far and its top features."""
        now = self._clock()
        firing = sorted(self._firing.values(), key=lambda a: a["starts_at"], reverse=True)
        return {
            "firing": [self._view(a, now) for a in firing],
            "resolved": [self._view(a, now) for a in reversed(self._resolved.values())],
        }

    def episodes(self, key: str) -> list[dict[str, Any]]:
        """``key``'s episodes the book still holds, oldest first (for shading its chart)."""
        found = [a for a in self._resolved.values() if a["key"] == key]
        if key in self._firing:
            found.append(self._firing[key])
        return [self._view(a, self._clock()) for a in sorted(found, key=lambda a: a["starts_at"])]

    def one(self, alert_id: str) -> dict[str, Any] | None:
        """One episode by id, as :meth:`view` shows it (for the live feed)."""
        if alert_id in self._resolved:
            return self._view(self._resolved[alert_id], self._clock())
        for entry in self._firing.values():
            if entry["alert_id"] == alert_id:
                return self._view(entry, self._clock())
        return None
