"""Helpers for the fleet tests (Redis Cluster failover, scale-out): a stream with anomaly
bursts, and the alert transitions it must produce, recomputed from the score events.

Alerts are judged against a reference rather than against fixed counts: the script's state of
a key depends only on that key's records in offset order (a key lives in one partition), so
feeding every scored record once, in partition-offset order, through a fresh
:class:`ThresholdState` gives exactly the transitions the fleet must have announced, whatever
moved between workers or Redis masters meanwhile. The thresholds are ``fixed`` (at the bundle's
floor), so a verdict depends on the score alone and not on when statistics were learned.
"""

from __future__ import annotations

import numpy as np
from confluent_kafka import Message
from helpers import DIM
from worker_support import sensor_value

from model.testing import synthetic_normal, synthetic_outliers
from schemas.events import Alert, ScoreEvent
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect
from streamer.state.thresholds import ThresholdPolicy
from streamer.state.verdicts import ThresholdState

KEYS = 16
BURST_EVERY = 300  # records between anomaly bursts
BURST = 6  # anomalous records of one key in a row: fires (5 of 10), then resolves
#: Thresholds for the fleet tests: the floor alone (a fixed value below any floor).
THRESHOLDS = {"policy": "fixed", "fixed": 1e-9}
ALERT_POLICY = AlertPolicy()  # the defaults, which the workers under test run with


def anomalous_stream(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) records over KEYS keys, ts = position; every BURST_EVERY records one
    key's next BURST records are outliers."""
    rows = synthetic_normal(n, DIM, seed)
    outliers = synthetic_outliers(n, DIM, seed)
    keys = [f"m{i % KEYS}" for i in range(n)]
    for burst, start in enumerate(range(BURST_EVERY // 2, n, BURST_EVERY)):
        key = f"m{burst % KEYS}"
        mine = [i for i in range(start, n) if keys[i] == key][:BURST]
        rows[mine] = outliers[mine]
    pairs = enumerate(zip(keys, rows, strict=True))
    return [(k.encode(), sensor_value(k, float(i), r)) for i, (k, r) in pairs]


def score_events(messages: list[Message]) -> list[ScoreEvent]:
    return [ScoreEvent.model_validate_json(m.value()) for m in messages]


def transitions(messages: list[Message]) -> set[tuple[str, str]]:
    """(alert_id, status) of every announced transition; repeats collapse (consumers
    de-duplicate by exactly this pair)."""
    alerts = [Alert.model_validate_json(m.value()) for m in messages]
    return {(a.alert_id, a.status) for a in alerts}


def reference_transitions(
    events: list[ScoreEvent], *, redis_url: str, prefix: str, floor: float
) -> set[tuple[str, str]]:
    """The transitions that the first score of every offset implies (see the module doc)."""
    first: dict[tuple[int, int], ScoreEvent] = {}
    for e in events:
        first.setdefault((e.source.partition, e.source.offset), e)
    ordered = [first[where] for where in sorted(first)]
    state = ThresholdState(
        connect(redis_url), prefix=prefix, alerts=ALERT_POLICY,
        thresholds=ThresholdPolicy(policy="fixed", fixed=THRESHOLDS["fixed"]),
    )  # fmt: skip
    (version,) = {e.model_version for e in ordered}
    found: set[tuple[str, str]] = set()
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        verdicts = state.apply(
            model_version=version,
            floor=floor,
            keys=[e.key for e in chunk],
            scores=np.array([e.score for e in chunk]),
            ts=np.array([e.ts for e in chunk]),
            partitions=np.array([e.source.partition for e in chunk]),
            offsets=np.array([e.source.offset for e in chunk]),
        )
        found |= {(a.alert_id, a.status) for a in verdicts.alerts}
    return found
