"""Drift signal: how far each key's recent scores are from the serving model's calibration.

The model bundle records quantiles of its own score on its training rows; if traffic still
looks like that, about 50 % of a key's scores fall below the 0.5 quantile, 40 % between the
0.5 and 0.9 quantiles, and so on. The population stability index (PSI) of the observed
fractions against those expected ones is the signal: ``sum((a - e) * ln(a / e))`` over the
bins. Computed in the retrain job from the scores topic (events of the serving version only),
so the worker's hot loop pays nothing; exported as ``ama_score_psi{key}`` and checked by
``retrain --every ... --on-drift``.

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
from streamer.lifecycle.window import read_since

__all__ = ["EDGES", "MIN_RECORDS", "DriftMetrics", "psi", "score_drift"]

EDGES = ("0.5", "0.9", "0.95", "0.99")
MIN_RECORDS = 200
_EPS = 1e-4  # an empty bin counts as this fraction, so ln(a / e) stays finite


def psi(scores: np.ndarray, calibration: dict[str, Any]) -> float:
    """PSI of ``scores`` against the calibration's score quantiles (module docstring)."""
    quantiles = calibration["z_quantiles"]
    edges = np.array([quantiles[q] for q in EDGES], dtype=np.float64)
    levels = np.array([0.0, *(float(q) for q in EDGES), 1.0])
    expected = np.diff(levels)
    counts = np.bincount(np.searchsorted(edges, scores, side="right"), minlength=len(expected))
    actual = np.maximum(counts / max(len(scores), 1), _EPS)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def score_drift(
    settings: Settings, *, model_version: str, calibration: dict[str, Any], now_s: float
) -> dict[str, float]:
    """PSI per key over the last ``retrain.drift_window_s`` of ``model_version``'s scores."""
    start_ms = int((now_s - settings.retrain.drift_window_s) * 1000)
    events = read_since(
        settings.kafka.client_config(), settings.retrain.group_id,
        settings.kafka.scores_topic, start_ms,
    )  # fmt: skip
    by_key: dict[str, list[float]] = {}
    for raw in events:
        try:
            event = orjson.loads(raw.value)
            if event["model_version"] == model_version:
                by_key.setdefault(str(event["key"]), []).append(float(event["score"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return {
        key: psi(np.array(scores), calibration)
        for key, scores in by_key.items()
        if len(scores) >= MIN_RECORDS
    }


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
