"""Drift signal: how far each key's recent scores are from the serving model's calibration.

The model bundle records quantiles of its own score on its training rows; if traffic still
looks like that, about 50 % of a key's scores fall below the 0.5 quantile, 40 % between the
0.5 and 0.9 quantiles, and so on. The population stability index (PSI) of the observed
fractions against those expected ones is the signal: ``sum((a - e) * ln(a / e))`` over the
bins. Computed in the retrain job from the scores topic (events of the serving version only),
so the worker's hot loop pays nothing; exported as ``ama_score_psi{key}`` and checked by
``retrain --every ... --on-drift``. :class:`DriftWindow` keeps it incrementally: each check
reads only the score events that arrived since the previous one and keeps, per key, bin counts
per minute of the window (memory: keys x minutes x 5 counts, whatever the score rate).

Bins: edges at the calibration's 0.5, 0.9, 0.95 and 0.99 quantiles (expected fractions 0.5,
0.4, 0.05, 0.04, 0.01). Finer tail bins (0.995, 0.999) expect so few records that a handful of
ordinary exceedances would read as drift. Keys with fewer than ``MIN_RECORDS`` recent scores are
not judged: with n records the PSI of undrifted traffic is about (bins - 1) / n, 0.02 at 200,
far below the usual 0.25 alarm level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Gauge

from schemas.settings import Settings
from streamer.lifecycle.window import iter_since, window_spans

__all__ = ["EDGES", "MIN_RECORDS", "DriftMetrics", "DriftWindow", "bin_counts", "psi",
           "psi_of_counts"]  # fmt: skip

EDGES = ("0.5", "0.9", "0.95", "0.99")
MIN_RECORDS = 200
_EPS = 1e-4  # an empty bin counts as this fraction, so ln(a / e) stays finite


def psi(scores: np.ndarray, calibration: dict[str, Any]) -> float:
    """PSI of ``scores`` against the calibration's score quantiles (module docstring)."""
    return psi_of_counts(bin_counts(scores, calibration))


def bin_counts(scores: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """How many of ``scores`` fall in each calibration bin (5 counts)."""
    quantiles = calibration["z_quantiles"]
    edges = np.array([quantiles[q] for q in EDGES], dtype=np.float64)
    return np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(EDGES) + 1)


def psi_of_counts(counts: np.ndarray) -> float:
    levels = np.array([0.0, *(float(q) for q in EDGES), 1.0])
    expected = np.diff(levels)
    actual = np.maximum(counts / max(int(counts.sum()), 1), _EPS)
    return float(((actual - expected) * np.log(actual / expected)).sum())


class DriftWindow:
    """Per-key bin counts of the serving version's recent scores, kept up to date by reading
    only what the scores topic gained since the last :meth:`update` (module docstring)."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.calibration: dict[str, Any] = {}
        self._next: dict[int, int] | None = None  # where the next read starts, per partition
        self._minutes: dict[str, dict[int, np.ndarray]] = {}  # key -> minute -> counts

    def update(
        self,
        settings: Settings,
        *,
        model_version: str,
        calibration: dict[str, Any],
        now_s: float,
    ) -> dict[str, float]:
        """PSI per key over the last ``retrain.drift_window_s`` of ``model_version``'s scores;
        a new version starts the window afresh (its scores have their own calibration)."""
        if model_version != self.version:
            self.version, self.calibration = model_version, calibration
            self._next, self._minutes = None, {}
        cfg, kafka = settings.retrain, settings.kafka
        client = kafka.client_config()
        start_ms = int((now_s - cfg.drift_window_s) * 1000)
        spans = window_spans(client, cfg.group_id, kafka.scores_topic, start_ms, self._next)
        self._next = {**(self._next or {}), **{p: hi for p, (_lo, hi) in spans.items()}}
        new: dict[tuple[str, int], list[float]] = {}
        for raw in iter_since(client, cfg.group_id, kafka.scores_topic, start_ms, spans=spans):
            if raw.timestamp_ms < start_ms:
                continue
            try:
                event = orjson.loads(raw.value)
                if event["model_version"] == model_version:
                    where = (str(event["key"]), raw.timestamp_ms // 60_000)
                    new.setdefault(where, []).append(float(event["score"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        for (key, minute), scores in new.items():
            minutes = self._minutes.setdefault(key, {})
            counts = bin_counts(np.array(scores), calibration)
            minutes[minute] = minutes.get(minute, 0) + counts
        return self._psi(start_ms // 60_000)

    def _psi(self, first_minute: int) -> dict[str, float]:
        """Drop minutes that left the window; PSI of each key with enough scores in it."""
        out = {}
        for key in list(self._minutes):
            minutes = self._minutes[key]
            for minute in [m for m in minutes if m < first_minute]:
                del minutes[minute]
            if not minutes:
                del self._minutes[key]
                continue
            counts = np.sum(list(minutes.values()), axis=0)
            if counts.sum() >= MIN_RECORDS:
                out[key] = psi_of_counts(counts)
        return out


class DriftMetrics:
    """``ama_score_psi{key}`` and ``ama_score_psi_max`` in the retrain job's own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.per_key = Gauge(
            "ama_score_psi",
            "PSI of the key's recent scores against the serving model's calibration.",
            ["key"],
            registry=self.registry,
        )
        self.worst = Gauge(
            "ama_score_psi_max", "Largest per-key PSI of the last check.", registry=self.registry
        )

    def update(self, drift: dict[str, float]) -> None:
        """Replace the exported values (keys gone quiet disappear)."""
        self.per_key.clear()
        for key, value in drift.items():
            self.per_key.labels(key=key).set(value)
        self.worst.set(max(drift.values(), default=0.0))
