"""The Redis edge: one round trip per batch, and degraded verdicts (never an exception) while
Redis is down, with automatic recovery."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis
from helpers import PrivateRedis, free_ports

from schemas.settings import load_settings
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect
from streamer.state.script import alert_key
from streamer.state.thresholds import ThresholdPolicy
from streamer.state.verdicts import ThresholdState, ThresholdStateError, Verdicts

pytestmark = pytest.mark.integration

FLOOR = 1.3
POLICY = ThresholdPolicy(policy="sigma", k_sigma=4.0, warmup=20, alpha=0.05)


class CountingConnection(redis.Connection):
    """Counts what goes over the wire: one packed send is one round trip; and connects."""

    sends = 0
    connects = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)

    def connect(self) -> None:
        type(self).connects += 1
        super().connect()


def counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(
        url, connection_class=CountingConnection, socket_connect_timeout=0.5, socket_timeout=1.0
    )
    return redis.Redis(connection_pool=pool, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


def apply(
    state: ThresholdState, scores: np.ndarray, start: int, keys: list[str] | None = None
) -> Verdicts:
    n = len(scores)
    offsets = np.arange(start, start + n, dtype=np.int64)
    return state.apply(
        model_version="m1",
        floor=FLOOR,
        keys=keys or ["k"] * n,
        scores=np.asarray(scores, np.float64),
        ts=1.7e9 + offsets.astype(np.float64),
        partitions=np.zeros(n, np.int64),
        offsets=offsets,
    )


def test_one_round_trip_per_batch(redis_url: str, redis_prefix: str) -> None:
    state = ThresholdState(counting_client(redis_url), prefix=redis_prefix, thresholds=POLICY)
    rng = np.random.default_rng(0)
    apply(state, rng.normal(1, 0.1, 10), 0)  # connects and loads the script (NOSCRIPT path)
    for start in (10, 1034):
        CountingConnection.sends = 0
        keys = [f"key-{i % 37}" for i in range(1024)]
        v = apply(state, rng.normal(1, 0.1, 1024), start, keys)
        assert CountingConnection.sends == 1
        assert len(v.thresholds) == 1024 and not v.degraded


def test_degraded_while_redis_is_down_then_recovers(
    private_redis: PrivateRedis, redis_prefix: str
) -> None:
    state = ThresholdState(
        connect(private_redis.url),
        prefix=redis_prefix,
        thresholds=POLICY,
        alerts=AlertPolicy(),
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
    )
    rng = np.random.default_rng(1)
    v = apply(state, rng.normal(1.2, 0.05, 100), 0, ["a", "b"] * 50)
    assert not v.degraded
    known = {key: state.snapshot(key, model_version="m1", floor=FLOOR).threshold for key in "ab"}
    assert known["a"] > 1.36  # learned: about 1.2 + 4 * 0.05, above the floor
    private_redis.stop()

    started = time.monotonic()
    scores = np.array([1.35, 5.0, 1.35, 5.0])
    v = apply(state, scores, 100, ["a", "a", "new", "new"])
    assert time.monotonic() - started < 0.5  # refused at once; never a long block
    assert v.degraded and v.alerts == []
    # Cached thresholds for known keys, the bundle's floor for a key never seen.
    np.testing.assert_array_equal(v.thresholds, [known["a"], known["a"], FLOOR, FLOOR])
    np.testing.assert_array_equal(v.is_anomaly, [False, True, True, True])
    assert state.degraded

    private_redis.start()  # empty again: no persistence
    deadline = time.monotonic() + 5
    while (v := apply(state, np.array([1.0]), 104, ["a"])).degraded:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.05)
    assert not state.degraded
    assert v.thresholds[0] == FLOOR  # the new server has no stats yet: warm-up


def test_backoff_spaces_reconnect_attempts(redis_prefix: str) -> None:
    """While Redis is down, batches keep flowing without a connect attempt each."""
    now = [0.0]
    client = counting_client(f"redis://127.0.0.1:{free_ports(1)[0]}/0")  # nobody listens there
    state = ThresholdState(
        client,
        prefix=redis_prefix,
        thresholds=POLICY,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
        clock=lambda: now[0],
    )
    CountingConnection.connects = 0
    for i in range(20):
        assert apply(state, np.array([1.0]), i).degraded
    assert CountingConnection.connects == 2  # the first batch: one try and one immediate retry
    gaps = []
    for _ in range(6):
        before = CountingConnection.connects
        steps = 0
        while CountingConnection.connects == before:
            now[0] += 0.1
            steps += 1
            apply(state, np.array([1.0]), 0)
        gaps.append(steps * 0.1)
    # Exponential up to the cap (with +-20 % jitter): about 1, 2, 4, 4, 4, 4 seconds.
    assert gaps[0] < gaps[1] < gaps[2] and all(3.1 < gap < 4.9 for gap in gaps[2:])


def test_closed_port_gives_floor_verdicts_quickly(redis_prefix: str) -> None:
    state = ThresholdState(connect(f"redis://127.0.0.1:{free_ports(1)[0]}/0"), prefix=redis_prefix)
    started = time.monotonic()
    v = apply(state, np.array([1.0, 2.0]), 0)
    assert time.monotonic() - started < 0.5
    assert (
        v.degraded and list(v.thresholds) == [FLOOR, FLOOR] and list(v.is_anomaly) == [False, True]
    )


def test_bad_batches_raise(redis_url: str, redis_prefix: str) -> None:
    state = ThresholdState(connect(redis_url), prefix=redis_prefix)
    with pytest.raises(ThresholdStateError):
        state.apply(
            model_version="m1",
            floor=1.0,
            keys=["a", "b"],
            scores=np.zeros(1),
            ts=np.zeros(2),
            partitions=np.zeros(2, np.int64),
            offsets=np.zeros(2, np.int64),
        )
    empty = state.apply(
        model_version="m1",
        floor=1.0,
        keys=[],
        scores=np.zeros(0),
        ts=np.zeros(0),
        partitions=np.zeros(0, np.int64),
        offsets=np.zeros(0, np.int64),
    )
    assert empty.thresholds.shape == (0,) and not empty.degraded


def test_from_settings(redis_url: str, redis_prefix: str) -> None:
    settings = load_settings(
        redis={"url": redis_url, "key_prefix": redis_prefix},
        thresholds={"policy": "fixed", "fixed": 2.0, "ttl_s": 60},
        alerts={"n_anomalous": 2, "window_m": 4, "quiet_records": 3},
    )
    state = ThresholdState.from_settings(settings)
    assert state.thresholds.policy == "fixed" and state.alerts.window_m == 4
    v = apply(state, np.array([1.0, 2.5, 2.5, 1.0, 1.0, 1.0]), 0)
    assert list(v.thresholds) == [2.0] * 6
    assert [alert.status for alert in v.alerts] == ["firing", "resolved"]
    assert 0 < redis.Redis.from_url(redis_url).ttl(alert_key(redis_prefix, "k")) <= 60
