"""Everything the page shows, behind one lock: series, alerts, rates, health, the fleet.

The reader threads write (:meth:`DashboardState.add_scores`, :meth:`add_alerts`), the poll
thread replaces the fleet, and the web server's handlers read the JSON views. Parsing happens
before the lock is taken, so a handler waits at most for one batch's numpy updates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from schemas.settings import Settings
from streamer.dashboard.alerts import AlertBook
from streamer.dashboard.fleet import Fleet, Health, Rates
from streamer.dashboard.ingest import parse_alerts, parse_scores
from streamer.dashboard.series import KeySeries

__all__ = ["DashboardState"]


class DashboardState:
    """The dashboard's memory (docs/dashboard.md lists what it keeps and for how long)."""

    def __init__(self, settings: Settings) -> None:
        cfg = settings.dashboard
        self.settings = settings
        self.lock = threading.Lock()
        self.series = KeySeries(history_s=cfg.history_s, bucket_s=cfg.bucket_s,
                                max_keys=cfg.max_keys)  # fmt: skip
        self.alerts = AlertBook(resolved_kept=cfg.resolved_kept, max_keys=cfg.max_keys)
        self.rates = Rates()
        self.health = Health()
        self.fleet = Fleet()
        self.read = {"scores": 0, "alerts": 0}  # messages read since start
        self.skipped = 0  # messages on the topics that were not score events or alerts
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    def listen(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """``callback(episodes)`` after every batch of alert messages that changed something
        (called on a reader thread; the server hands it to its event loop)."""
        self._listeners.append(callback)

    # Writers (reader and poll threads) --------------------------------------------------------

    def add_scores(self, values: list[bytes]) -> None:
        batch, flagged, bad = parse_scores(values)
        with self.lock:
            self.series.add(batch)
            self.alerts.add_flagged(flagged)
            self.rates.add(records=len(batch.keys), flagged=len(flagged))
            self.read["scores"] += len(values)
            self.skipped += bad

    def add_alerts(self, values: list[bytes]) -> None:
        alerts, bad = parse_alerts(values)
        with self.lock:
            changed = [a["alert_id"] for a in alerts if self.alerts.add_alert(a)]
            self.rates.add(alerts=sum(a["status"] == "firing" for a in alerts))
            self.read["alerts"] += len(values)
            self.skipped += bad
            episodes = [e for e in map(self.alerts.one, dict.fromkeys(changed)) if e is not None]
        if episodes:
            for callback in self._listeners:
                callback(episodes)

    def set_fleet(self, fleet: Fleet) -> None:
        with self.lock:
            self.fleet = fleet

    # Views (JSON-ready) -----------------------------------------------------------------------

    def fleet_view(self) -> dict[str, Any]:
        """The header and the fleet page: rates, firing count, lag, model, connection health."""
        with self.lock:
            fleet = self.fleet
            rates = self.rates.per_second()
            return {
                "records_per_s": rates["records"],
                "flagged_per_s": rates["flagged"],
                "alerts_per_s": rates["alerts"],
                "firing": self.alerts.firing_count,
                "dlq_per_s": fleet.dlq_per_s,
                "partitions": fleet.partitions,
                "members": fleet.members,
                "group": self.settings.kafka.group_id,
                "group_state": fleet.group_state,
                "model": fleet.model,
                "keys": len(self.series),
                "read": dict(self.read),
                "skipped": self.skipped,
                "health": self.health.view(),
                "refreshed_at": fleet.refreshed_at,
            }

    def rates_view(self) -> dict[str, list[float]]:
        with self.lock:
            return self.rates.series()

    def alerts_view(self) -> dict[str, Any]:
        with self.lock:
            return self.alerts.view()

    def key_view(self, key: str) -> dict[str, Any] | None:
        """``key``'s chart (buckets) and episodes; None for a key the dashboard has not seen."""
        with self.lock:
            points = self.series.points(key)
            if points is None:
                return None
            return {
                "key": key,
                "bucket_s": self.series.bucket_s,
                "points": points,
                "episodes": self.alerts.episodes(key),
            }

    def search(self, query: str, limit: int = 20) -> dict[str, Any]:
        with self.lock:
            return {"keys": self.series.search(query, limit), "of": len(self.series)}

    def heatmap_view(self, rows: int = 20, columns: int = 60) -> dict[str, Any]:
        with self.lock:
            return self.series.heatmap(rows=rows, columns=columns)

    def models_view(self) -> dict[str, Any]:
        """The model history, newest first, and what serves now."""
        with self.lock:
            fleet = self.fleet
            return {"serving": fleet.model, "history": list(reversed(fleet.history))}
