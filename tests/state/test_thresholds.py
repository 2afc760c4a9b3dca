"""Threshold policies against the real Redis: the script's numbers equal a Python reference
(reference.py), warm-up uses the floor, anomalies stay out of the statistics, a level shift is
followed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import redis
from reference import threshold as reference_threshold

from schemas.errors import ConfigError
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect
from streamer.state.script import alert_key, stats_key
from streamer.state.thresholds import KeyStats, ThresholdPolicy
from streamer.state.verdicts import ThresholdState, Verdicts

pytestmark = pytest.mark.integration

# The bundle's calibrated threshold. It is the verdict during warm-up, and records above it are
# not learned then, so each test picks one above most of its normal scores, as a calibration on
# normal data would be.
FLOOR = 1.6
# Alerts that cannot fire on the rare normal exceedance: the reference below has no alert state.
NO_ALERTS = AlertPolicy(n_anomalous=10, window_m=10, quiet_records=5)


def make_state(
    redis_url: str,
    prefix: str,
    policy: ThresholdPolicy,
    *,
    alerts: AlertPolicy = NO_ALERTS,
    ttl_s: int = 3600,
) -> ThresholdState:
    return ThresholdState(
        connect(redis_url), prefix=prefix, thresholds=policy, alerts=alerts, ttl_s=ttl_s
    )


class Feed:
    """Feeds records to a state with increasing offsets per partition 0 and ts per record."""

    def __init__(
        self, state: ThresholdState, model_version: str = "m1", floor: float = FLOOR
    ) -> None:
        self.state = state
        self.model_version = model_version
        self.floor = floor
        self.offset = 0

    def __call__(self, keys: Sequence[str], scores: np.ndarray) -> Verdicts:
        n = len(keys)
        offsets = np.arange(self.offset, self.offset + n, dtype=np.int64)
        self.offset += n
        return self.state.apply(
            model_version=self.model_version,
            floor=self.floor,
            keys=list(keys),
            scores=np.asarray(scores, np.float64),
            ts=1.7e9 + offsets.astype(np.float64),
            partitions=np.zeros(n, np.int64),
            offsets=offsets,
        )


def reference(
    policy: ThresholdPolicy, floor: float, scores: np.ndarray
) -> tuple[np.ndarray, KeyStats]:
    """The documented algorithm for one key outside alert episodes, in plain Python."""
    n, mean, var, q = 0, 0.0, 0.0, 0.0
    out = []
    for x in scores.tolist():
        t = reference_threshold(policy, KeyStats(n, mean, var, q), floor)
        out.append(t)
        anomalous = x > t
        if not anomalous:
            n += 1
            a = max(policy.alpha, 1 / n)
            if n == 1:
                mean, var, q = x, 0.0, x
            else:
                d = x - mean
                inc = a * d
                mean += inc
                var = (1 - a) * (var + d * inc)
        if n == 0:
            continue
        if n < policy.warmup:
            q = mean + policy.z * math.sqrt(var)
        else:
            sigma = max(math.sqrt(var), 1e-9 * max(1.0, abs(mean)))
            q += policy.quantile_gain * sigma * (policy.quantile - (1.0 if x <= q else 0.0))
    return np.array(out), KeyStats(n, mean, var, q)


@pytest.mark.parametrize(
    "policy",
    [
        ThresholdPolicy(policy="quantile", quantile=0.99, warmup=30, alpha=0.05),
        ThresholdPolicy(policy="sigma", k_sigma=3.0, warmup=30, alpha=0.05),
        ThresholdPolicy(policy="fixed", fixed=1.8, warmup=30, alpha=0.05),
    ],
    ids=["quantile", "sigma", "fixed"],
)
def test_policy_thresholds_match_the_reference(
    redis_url: str, redis_prefix: str, policy: ThresholdPolicy
) -> None:
    rng = np.random.default_rng(7)
    scores = rng.gamma(4.0, 0.25, 600)  # skewed like reconstruction errors, mean 1
    feed = Feed(make_state(redis_url, redis_prefix, policy))
    got = np.concatenate([feed(["k"] * 200, chunk).thresholds for chunk in np.split(scores, 3)])

    expected, stats = reference(policy, FLOOR, scores)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    snap = feed.state.snapshot("k", model_version="m1", floor=FLOOR)
    assert snap.stats is not None
    assert snap.stats.n == stats.n
    np.testing.assert_allclose(
        [snap.stats.mean, snap.stats.var, snap.stats.quantile],
        [stats.mean, stats.var, stats.quantile],
        rtol=1e-12,
    )
    # The snapshot's threshold is the one the next record gets.
    assert snap.threshold == feed(["k"], np.array([0.0])).thresholds[0]


def test_warmup_uses_the_floor_then_the_keys_own_stats(redis_url: str, redis_prefix: str) -> None:
    policy = ThresholdPolicy(policy="sigma", k_sigma=3.0, warmup=50, alpha=0.05)
    feed = Feed(make_state(redis_url, redis_prefix, policy), floor=0.2)
    rng = np.random.default_rng(1)
    v = feed(["k"] * 60, rng.normal(0.1, 0.01, 60))
    assert (v.thresholds[:50] == 0.2).all()  # warm-up: the bundle's calibrated threshold
    assert not v.is_anomaly.any()
    # From the 51st normal record on: mean + 3 sigma, but never below the floor.
    assert (v.thresholds[50:] == 0.2).all()  # 0.1 + 3 * 0.01 < floor: the floor holds
    v = Feed(make_state(redis_url, redis_prefix + "b", policy), floor=0.125)(
        ["k"] * 60, rng.normal(0.1, 0.01, 60)
    )
    assert (v.thresholds[:50] == 0.125).all()
    assert (np.abs(v.thresholds[50:] - 0.13) < 0.01).all()
    assert (v.thresholds[50:] >= 0.125).all()


def test_exact_running_stats_during_the_first_records(redis_url: str, redis_prefix: str) -> None:
    """Until 1/alpha records the mean and variance are the plain ones: no start-up bias."""
    policy = ThresholdPolicy(policy="sigma", warmup=5, alpha=0.01)
    feed = Feed(make_state(redis_url, redis_prefix, policy), floor=1e9)  # nothing anomalous
    scores = np.random.default_rng(2).normal(3.0, 0.5, 40)
    feed(["k"] * 40, scores)
    stats = feed.state.snapshot("k", model_version="m1", floor=0.0).stats
    assert stats is not None and stats.n == 40
    assert stats.mean == pytest.approx(scores.mean(), rel=1e-12)
    assert stats.var == pytest.approx(scores.var(), rel=1e-9)


def test_anomalies_do_not_feed_the_stats(redis_url: str, redis_prefix: str) -> None:
    policy = ThresholdPolicy(policy="sigma", k_sigma=4.0, warmup=20, alpha=0.05)
    rng = np.random.default_rng(3)
    normal = rng.normal(1.0, 0.1, 100)
    stats = {}
    for spike in (5.0, 1e6):
        prefix = f"{redis_prefix}:{spike}"
        feed = Feed(make_state(redis_url, prefix, policy), floor=1.3)
        feed(["k"] * 100, normal)
        before = feed.state.snapshot("k", model_version="m1", floor=1.3)
        v = feed(["k"], np.array([spike]))
        assert v.is_anomaly[0]
        after = feed.state.snapshot("k", model_version="m1", floor=1.3)
        assert after.stats is not None and before.stats is not None
        # Mean, variance and count are untouched; the anomaly's threshold was not raised by it.
        assert (after.stats.n, after.stats.mean, after.stats.var) == (
            before.stats.n,
            before.stats.mean,
            before.stats.var,
        )
        assert after.threshold == before.threshold == v.thresholds[0]
        stats[spike] = after.stats
    # The magnitude of an anomaly never matters.
    assert stats[5.0] == stats[1e6]


def test_quantile_tracker_counts_exceedances_and_holds_its_level(
    redis_url: str, redis_prefix: str
) -> None:
    """Scores above the tracked quantile are anomalies; if they were simply dropped the tracker
    would only ever see scores below itself and sink to the floor. It must instead hold the
    key's quantile, so about 1 - quantile of normal records are flagged."""
    policy = ThresholdPolicy(policy="quantile", quantile=0.99, warmup=100, alpha=0.01)
    feed = Feed(make_state(redis_url, redis_prefix, policy), floor=12.0)
    scores = np.random.default_rng(4).normal(10.0, 1.0, 6000)
    verdicts = [feed(["k"] * 1000, chunk) for chunk in np.split(scores, 6)]
    late = np.concatenate([v.thresholds for v in verdicts[2:]])
    flagged = np.concatenate([v.is_anomaly for v in verdicts[2:]]).mean()
    true_q = 10.0 + 2.326
    assert abs(late.mean() - true_q) < 0.3
    assert 0.003 < flagged < 0.03


@pytest.mark.parametrize("name", ["quantile", "sigma"])
def test_level_shift_is_followed_by_that_key_only(
    redis_url: str, redis_prefix: str, name: str
) -> None:
    alpha = 0.02  # the window: about 1/alpha = 50 normal records
    policy = ThresholdPolicy(
        policy=name,  # type: ignore[arg-type]
        quantile=0.99,
        k_sigma=3.0,
        warmup=50,
        alpha=alpha,
    )
    feed = Feed(make_state(redis_url, redis_prefix, policy, alerts=AlertPolicy()), floor=1.2)
    rng = np.random.default_rng(5)

    def run(level: float, per_key: int = 1000) -> np.ndarray:
        keys = ["shifted", "steady"] * per_key
        scores = rng.normal(1.0, 0.1, len(keys))
        scores[0::2] += level
        return feed(keys, scores).thresholds

    run(0.0, 200)  # warm-up and settling
    before = run(0.0)
    run(0.1, int(5 / alpha))  # five windows after the shift...
    after = run(0.1)  # ...the shifted key's threshold has moved by the shift
    shifted = after[0::2].mean() - before[0::2].mean()
    steady = after[1::2].mean() - before[1::2].mean()
    assert 0.06 < shifted < 0.14, shifted
    assert abs(steady) < 0.03, steady


def test_stats_are_kept_per_model_version_and_expire(redis_url: str, redis_prefix: str) -> None:
    policy = ThresholdPolicy(policy="sigma", k_sigma=3.0, warmup=10, alpha=0.1)
    state = make_state(redis_url, redis_prefix, policy, ttl_s=120)
    old = Feed(state, "v1", floor=5.2)
    old(["k"] * 50, np.random.default_rng(6).normal(5.0, 0.1, 50))
    assert old.state.snapshot("k", model_version="v1", floor=5.2).threshold > 5.2
    new = Feed(state, "v2", floor=0.3)
    new.offset = old.offset
    v = new(["k"] * 5, np.full(5, 0.1))
    assert (v.thresholds == 0.3).all()  # a new model starts from its own warm-up
    client = redis.Redis.from_url(redis_url)
    names = (
        stats_key(redis_prefix, "v1", "k"),
        stats_key(redis_prefix, "v2", "k"),
        alert_key(redis_prefix, "k"),
    )
    for name in names:
        assert 0 < client.ttl(name) <= 120, name


def test_non_finite_scores_are_anomalous_and_never_learned(
    redis_url: str, redis_prefix: str
) -> None:
    policy = ThresholdPolicy(policy="sigma", warmup=0, alpha=0.1)
    feed = Feed(make_state(redis_url, redis_prefix, policy))
    feed(["k"] * 3, np.array([0.1, 0.2, 0.3]))
    before = feed.state.snapshot("k", model_version="m1", floor=FLOOR).stats
    v = feed(["k"] * 2, np.array([np.nan, np.inf]))
    assert v.is_anomaly.all() and np.isfinite(v.thresholds).all()
    after = feed.state.snapshot("k", model_version="m1", floor=FLOOR).stats
    assert before is not None and after is not None
    assert (after.n, after.mean, after.var) == (before.n, before.mean, before.var)


def test_policy_validation() -> None:
    with pytest.raises(ConfigError):
        ThresholdPolicy(policy="fixed")
    with pytest.raises(ConfigError):
        ThresholdPolicy(quantile=1.0)
    with pytest.raises(ConfigError):
        ThresholdPolicy(alpha=0.0)


def test_fixed_policy_is_floored(redis_url: str, redis_prefix: str) -> None:
    low = Feed(make_state(redis_url, redis_prefix, ThresholdPolicy(policy="fixed", fixed=0.1)))
    assert (low(["k"] * 3, np.array([0.2, 0.6, 0.4])).thresholds == FLOOR).all()
    high = Feed(
        make_state(redis_url, redis_prefix + "b", ThresholdPolicy(policy="fixed", fixed=1.9))
    )
    v = high(["k"] * 3, np.array([0.2, 1.8, 2.0]))
    assert (v.thresholds == 1.9).all() and v.is_anomaly.tolist() == [False, False, True]
