"""The detectors the stream evaluation compares, behind one interface.

Each is fitted on a stream's first training rows and then scores rows strictly in time order:
a row's score may use that row and the rows before it (its window), never a later one. The
windowed detectors see the last ``WINDOW`` rows of the key, oldest first, padded with the
oldest row available at the start of a key's history (a new key has no earlier rows).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from model.detector import AMADetector
from model.evaluate import components_for, feature_scale
from model.networks import FAITHFUL
from model.temporal import window_rows

__all__ = ["DETECTORS", "WINDOW", "StreamDetector", "make"]

WINDOW = 10  # rows of history a windowed detector sees; fixed a priori, not tuned per suite
KNN_FIT_ROWS = 5000  # KNN keeps its training rows: evenly spaced ones bound its scoring cost


class StreamDetector(Protocol):
    def fit(self, rows: np.ndarray, seed: int) -> None: ...

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Scores of ``rows`` (higher = more anomalous); ``prefix`` = the key's rows before
        them in time (may be empty), used only as history for the first windows."""
        ...


class _Standardised:
    """Features standardised with the fitting rows' mean and std (a zero std counts as 1)."""

    def _fit_scale(self, rows: np.ndarray) -> np.ndarray:
        self._mean, self._std = feature_scale(rows)
        return self._scaled(rows)

    def _scaled(self, rows: np.ndarray) -> np.ndarray:
        return (rows - self._mean) / self._std


class AMA:
    """The product's detector on single rows (``window=1``) or on windows of the key's rows
    (the temporal variant; model/temporal.py); ``config`` selects e.g. the faithful one."""

    def __init__(self, window: int = 1, config: dict[str, Any] | None = None) -> None:
        self._window = window
        self._config = config or {}

    def fit(self, rows: np.ndarray, seed: int) -> None:
        self._det = AMADetector(kind="vector", **self._config)  # the default fit and its budget
        self._det.fit(window_rows(rows[:0], rows, self._window), seed=seed, progress=False,
                      device="cpu")  # fmt: skip

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._det.score(window_rows(prefix, rows, self._window))


class KNNWindows(_Standardised):
    """Distance to the 5th nearest training window (PyOD KNN, 'largest')."""

    def fit(self, rows: np.ndarray, seed: int) -> None:
        from pyod.models.knn import KNN

        x = window_rows(rows[:0], self._fit_scale(rows), WINDOW)
        if len(x) > KNN_FIT_ROWS:
            x = x[np.linspace(0, len(x) - 1, KNN_FIT_ROWS).astype(int)]
        self._model = KNN(n_neighbors=5).fit(x)

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        x = window_rows(self._scaled(prefix), self._scaled(rows), WINDOW)
        return np.asarray(self._model.decision_function(x), np.float64)


class PCAWindows(_Standardised):
    """Squared reconstruction error of a window from the principal components that explain
    95% of the training windows' variance."""

    def fit(self, rows: np.ndarray, seed: int) -> None:
        x = window_rows(rows[:0], self._fit_scale(rows), WINDOW)
        self._centre = x.mean(0)
        _, sv, vt = np.linalg.svd(x - self._centre, full_matrices=False)
        self._basis = vt[: components_for(sv, 0.95)]

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        x = window_rows(self._scaled(prefix), self._scaled(rows), WINDOW) - self._centre
        residual = x - (x @ self._basis.T) @ self._basis
        return np.asarray(np.sum(residual**2, axis=1), np.float64)


class IForestRows(_Standardised):
    """Isolation forest on single rows (PyOD, 200 trees)."""

    def fit(self, rows: np.ndarray, seed: int) -> None:
        from pyod.models.iforest import IForest

        self._model = IForest(n_estimators=200, random_state=seed).fit(self._fit_scale(rows))

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.decision_function(self._scaled(rows)), np.float64)


class HalfSpaceTrees:
    """River's HalfSpaceTrees, online: it learns every row after scoring it, as it goes.

    Inputs are min-max scaled with the fitting rows' range (HST expects [0, 1]) and clipped.
    """

    def fit(self, rows: np.ndarray, seed: int) -> None:
        from river.anomaly import HalfSpaceTrees as HST

        self._lo, hi = rows.min(0), rows.max(0)
        self._span = np.where(hi - self._lo < 1e-12, 1.0, hi - self._lo)
        self._model = HST(seed=seed)  # River's defaults: 10 trees of height 8, window 250
        for x in self._unit(rows):
            self._model.learn_one(x)

    def _unit(self, rows: np.ndarray) -> list[dict[int, float]]:
        scaled = np.clip((rows - self._lo) / self._span, 0.0, 1.0)
        return [dict(enumerate(r.tolist())) for r in scaled]

    def score(self, prefix: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), np.float64)
        for i, x in enumerate(self._unit(rows)):
            out[i] = self._model.score_one(x)
            self._model.learn_one(x)
        return out


DETECTORS: dict[str, Any] = {
    "AMA": lambda: AMA(),
    "AMA-temporal": lambda: AMA(window=WINDOW),
    "AMA-faithful": lambda: AMA(config=FAITHFUL),
    "KNN-win": KNNWindows,
    "PCA-win": PCAWindows,
    "IForest": IForestRows,
    "HST": HalfSpaceTrees,
}


def make(name: str) -> StreamDetector:
    """A fresh, unfitted detector by its report name."""
    if name not in DETECTORS:
        raise ValueError(f"unknown stream detector {name!r} (choose from {', '.join(DETECTORS)})")
    detector: StreamDetector = DETECTORS[name]()
    return detector
