"""The backlog of records judged while Redis was unavailable: held in order, applied in order
once Redis takes them, their alerts returned for producing, their offsets then committable,
and what belongs to revoked partitions dropped (pure logic; the worker test uses real Redis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.events import Alert, alert_fingerprint
from streamer.worker.backlog import Backlog
from streamer.worker.pipeline import VerdictRequest


@dataclass
class Verdict:
    thresholds: np.ndarray
    is_anomaly: np.ndarray
    alerts: list[Alert]
    degraded: bool


@dataclass
class SharedState:
    """Stands in for Redis: up or down; records the offsets it was given, in order."""

    up: bool = False
    applied: list[int] = field(default_factory=list)

    def apply(self, *, keys: Any, scores: np.ndarray, offsets: np.ndarray, **_: Any) -> Verdict:
        n = len(keys)
        if not self.up:
            return Verdict(np.zeros(n), np.zeros(n, bool), [], True)
        self.applied += offsets.tolist()
        alerts = [
            Alert(alert_id=alert_fingerprint(k, 5.0), key=k, status="firing", starts_at=5.0,
                  ends_at=None, peak_score=float(s), threshold=1.0, n_anomalous=1,
                  model_version="v1", severity="critical")
            for k, s in zip(keys, scores, strict=True) if s > 1.0
        ]  # fmt: skip
        return Verdict(np.ones(n), scores > 1.0, alerts, False)


def request(offsets: list[int], partition: int = 0, scores: list[float] | None = None) -> Any:
    n = len(offsets)
    return VerdictRequest(
        "v1", 1.0, [f"k{o}" for o in offsets], np.array(scores or [0.5] * n, np.float64),
        np.arange(n, dtype=np.float64), np.full(n, partition), np.array(offsets),
    )  # fmt: skip


def test_held_batches_are_applied_in_order_once_redis_is_back() -> None:
    state, backlog = SharedState(), Backlog(limit=100)
    backlog.hold([request([0, 1])], {("in", 0): 2})
    backlog.hold([request([2, 3], scores=[0.5, 3.0])], {("in", 0): 4})
    backlog.hold([], {("in", 0): 6})  # a batch with only dead letters, held behind the others

    assert backlog.catch_up(state, "alerts").records == 0 and backlog.records == 4  # still down
    state.up = True
    done = backlog.catch_up(state, "alerts")

    assert state.applied == [0, 1, 2, 3] and not backlog
    assert done.records == 4 and done.offsets == {("in", 0): 6}
    assert [m.key for m in done.messages] == [b"k3"] and dict(done.alerts) == {"firing": 1}


def test_revoked_partitions_leave_the_backlog() -> None:
    backlog = Backlog(limit=3)
    mixed = VerdictRequest(
        "v1", 1.0, ["a", "b", "c"], np.zeros(3), np.zeros(3), np.array([0, 1, 0]),
        np.array([7, 8, 9]),
    )  # fmt: skip
    backlog.hold([mixed], {("in", 0): 10, ("in", 1): 9})
    assert backlog.full
    assert backlog.forget([("in", 1)]) == 1
    assert backlog.records == 2 and not backlog.full
    state = SharedState(up=True)
    done = backlog.catch_up(state, "alerts")
    assert state.applied == [7, 9] and done.offsets == {("in", 0): 10}
