"""Alert episodes against the real Redis: one firing and one resolved per episode, same id,
nothing doubled by a replayed batch."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import redis

from schemas.errors import ConfigError
from schemas.events import Alert, alert_fingerprint
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect
from streamer.state.script import alert_key, stats_key
from streamer.state.thresholds import ThresholdPolicy
from streamer.state.verdicts import ThresholdState, Verdicts

pytestmark = pytest.mark.integration

FLOOR = 1.3
# mean + 4 sigma: a normal record of N(1, 0.1) is flagged about once in 30 000.
POLICY = ThresholdPolicy(policy="sigma", k_sigma=4.0, warmup=50, alpha=0.02)
ALERTS = AlertPolicy(n_anomalous=3, window_m=10, quiet_records=20)
T0 = 1_700_000_000.0


def make_state(redis_url: str, prefix: str, *, reemit: bool = True) -> ThresholdState:
    return ThresholdState(
        connect(redis_url),
        prefix=prefix,
        thresholds=POLICY,
        alerts=ALERTS,
        reemit_replayed_alerts=reemit,
    )


def apply(
    state: ThresholdState, keys: list[str], scores: np.ndarray, start: int, partition: int = 0
) -> Verdicts:
    """Records at offsets start.. of one partition, ts = T0 + offset / 10."""
    offsets = np.arange(start, start + len(keys), dtype=np.int64)
    return state.apply(
        model_version="m1",
        floor=FLOOR,
        keys=keys,
        scores=np.asarray(scores, np.float64),
        ts=T0 + offsets / 10,
        partitions=np.full(len(keys), partition, np.int64),
        offsets=offsets,
    )


def spike_stream(seed: int = 0) -> np.ndarray:
    """300 normal, 5 spikes (two above 2x threshold), then 60 normal records."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(1.0, 0.1, 365)
    scores[300:305] = [2.0, 3.5, 2.2, 1.9, 2.1]
    return scores


def test_a_spike_fires_one_alert_that_resolves_with_the_same_id(
    redis_url: str, redis_prefix: str
) -> None:
    state = make_state(redis_url, redis_prefix)
    scores = spike_stream()
    alerts: list[Alert] = []
    snapshots = []
    for start in range(0, 365, 7):  # batch boundaries cut through the episode
        chunk = scores[start : start + 7]
        v = apply(state, ["dev"] * len(chunk), chunk, start)
        alerts += v.alerts
        snapshots.append(state.snapshot("dev", model_version="m1", floor=FLOOR).alert_state)
    firing, resolved = alerts
    assert firing.status == "firing" and resolved.status == "resolved"
    starts_at = T0 + 300 / 10  # the episode's first anomalous record
    assert firing.alert_id == resolved.alert_id == alert_fingerprint("dev", starts_at)
    assert firing.starts_at == resolved.starts_at == starts_at
    assert firing.ends_at is None and resolved.ends_at == T0 + 304 / 10  # last anomalous record
    assert firing.n_anomalous == 3 and resolved.n_anomalous == 5
    assert firing.peak_score == resolved.peak_score == 3.5
    assert resolved.severity == "critical"  # 3.5 >= 2 x threshold (about 1.4)
    assert resolved.threshold == pytest.approx(1.4, abs=0.05)
    assert snapshots[42:47] == ["pending", "firing", "firing", "firing", "ok"]  # 300..328


def test_resolution_needs_a_quiet_run(redis_url: str, redis_prefix: str) -> None:
    state = make_state(redis_url, redis_prefix)
    scores = spike_stream()
    scores[315] = 2.5  # anomalous again before 20 quiet records: the same episode continues
    v = apply(state, ["dev"] * 365, scores, 0)
    firing, resolved = v.alerts
    assert firing.alert_id == resolved.alert_id
    assert resolved.n_anomalous == 6 and resolved.ends_at == T0 + 315 / 10
    assert v.is_anomaly[315]


def test_severity_warning_below_the_critical_ratio(redis_url: str, redis_prefix: str) -> None:
    state = make_state(redis_url, redis_prefix)
    scores = spike_stream()
    scores[300:305] = 1.9
    (firing, resolved) = apply(state, ["dev"] * 365, scores, 0).alerts
    assert firing.severity == resolved.severity == "warning"


def test_keys_have_independent_episodes(redis_url: str, redis_prefix: str) -> None:
    state = make_state(redis_url, redis_prefix)
    a, b = spike_stream(1), np.random.default_rng(2).normal(1.0, 0.1, 365)
    keys = ["a", "b"] * 365
    scores = np.empty(730)
    scores[0::2], scores[1::2] = a, b
    v = apply(state, keys, scores, 0)
    assert [(x.key, x.status) for x in v.alerts] == [("a", "firing"), ("a", "resolved")]


def test_replaying_a_batch_changes_nothing_and_never_opens_a_second_episode(
    redis_url: str, redis_prefix: str
) -> None:
    state = make_state(redis_url, redis_prefix)
    client = redis.Redis.from_url(redis_url)
    scores = spike_stream()
    apply(state, ["dev"] * 290, scores[:290], 0)
    first = apply(state, ["dev"] * 20, scores[290:310], 290)  # the episode fires in here
    assert [x.status for x in first.alerts] == ["firing"]
    stored = {
        name: client.hgetall(name)
        for name in (stats_key(redis_prefix, "m1", "dev"), alert_key(redis_prefix, "dev"))
    }

    # Redelivery after a crash: same offsets. Nothing is learned, no new episode starts; the
    # firing is re-announced (identical, same alert_id) because the first reply may be lost.
    again = apply(state, ["dev"] * 20, scores[290:310], 290)
    assert again.alerts == first.alerts and again.replayed_alerts == 1
    np.testing.assert_array_equal(again.is_anomaly[10:15], first.is_anomaly[10:15])
    assert {name: client.hgetall(name) for name in stored} == stored

    # A batch overlapping the replayed one applies only its new offsets.
    rest = apply(state, ["dev"] * 65, scores[300:365], 300)
    assert [x.status for x in rest.alerts] == ["firing", "resolved"]
    assert rest.replayed_alerts == 1  # offset 302 fired the episode: re-announced once
    assert len({x.alert_id for x in rest.alerts}) == 1

    quiet = make_state(redis_url, redis_prefix, reemit=False)
    assert apply(quiet, ["dev"] * 20, scores[290:310], 290).alerts == []


def test_replay_from_another_partition_offset_space(redis_url: str, redis_prefix: str) -> None:
    """Offsets are per (key, partition): the same offset on another partition is new data."""
    state = make_state(redis_url, redis_prefix)
    scores = np.random.default_rng(3).uniform(0.9, 1.1, 100)  # never anomalous
    apply(state, ["k"] * 100, scores, 0, partition=0)
    apply(state, ["k"] * 100, scores, 0, partition=1)
    stats = state.snapshot("k", model_version="m1", floor=FLOOR).stats
    assert stats is not None and stats.n == 200


def test_alert_state_is_a_named_map_in_redis(redis_url: str, redis_prefix: str) -> None:
    """Operators and dashboards read the stored state by field name, never by position."""
    state = make_state(redis_url, redis_prefix)
    apply(state, ["dev"] * 303, spike_stream()[:303], 0)  # firing since record 300
    raw = redis.Redis.from_url(redis_url).hget(f"{redis_prefix}:alert:dev", "a")
    stored = orjson.loads(raw)
    assert stored["state"] == "firing" and stored["n_anomalous"] == 3
    assert float(stored["start"]) == T0 + 30.0
    assert stored["fired"]["status"] == "firing" and stored["fired_at"] == "0:302"


def test_alert_policy_validation() -> None:
    with pytest.raises(ConfigError):
        AlertPolicy(n_anomalous=11, window_m=10)
    with pytest.raises(ConfigError):
        AlertPolicy(quiet_records=0)


@pytest.mark.parametrize(("spike", "fires_at_once"), [(2.0, False), (4.5, True)])
def test_one_record_far_above_its_threshold_fires_at_once(
    redis_url: str, redis_prefix: str, spike: float, fires_at_once: bool
) -> None:
    # fire_ratio 3: a single record at 3x its threshold (~1.4 here) pages without waiting for
    # 5 of 10; one just above the threshold stays a lone exceedance and never fires.
    state = ThresholdState(
        connect(redis_url), prefix=redis_prefix, thresholds=POLICY,
        alerts=AlertPolicy(n_anomalous=5, window_m=10, quiet_records=20, fire_ratio=3.0),
    )  # fmt: skip
    scores = np.random.default_rng(3).normal(1.0, 0.1, 330)
    scores[300] = spike
    fired = [
        (start, a.status)
        for start in range(0, 330, 10)
        for a in apply(state, ["k"] * 10, scores[start : start + 10], start).alerts
    ]
    assert fired == ([(300, "firing"), (320, "resolved")] if fires_at_once else [])


def test_fire_ratio_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="fire_ratio"):
        AlertPolicy(fire_ratio=0.5)
