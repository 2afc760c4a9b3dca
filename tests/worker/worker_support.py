"""Helpers for the worker tests: records, and a verdict source without Redis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from helpers import DIM

from model.testing import synthetic_normal
from schemas.events import Alert


@dataclass(frozen=True)
class StaticVerdicts:
    thresholds: np.ndarray
    is_anomaly: np.ndarray
    alerts: list[Alert]
    degraded: bool


class FloorVerdicts:
    """A verdict source without Redis: the bundle's threshold, no alerts. For pipeline logic."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(
        self,
        *,
        model_version: str,
        floor: float,
        keys: Sequence[str],
        scores: np.ndarray,
        ts: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> StaticVerdicts:
        self.calls += 1
        thresholds = np.full(len(keys), floor)
        return StaticVerdicts(thresholds, scores > thresholds, [], False)


def sensor_value(key: str, ts: float, values: np.ndarray) -> bytes:
    return orjson.dumps({"key": key, "ts": ts, "values": values.tolist()})


def normal_values(n: int, seed: int = 0) -> np.ndarray:
    return synthetic_normal(n, DIM, seed)
