"""Thresholds, alerts and the registry on a real Redis Cluster (three masters, one replica
each): the same verdicts and transitions as on one server, every script call inside one hash
slot, one pipeline per batch, and a replayed batch still changes nothing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis
from helpers import PrivateRedisCluster

from schemas.settings import load_settings
from streamer.lifecycle import registry
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect, connect_from_settings
from streamer.state.keys import KeyLayout
from streamer.state.thresholds import ThresholdPolicy
from streamer.state.verdicts import ThresholdState, Verdicts

pytestmark = pytest.mark.integration

FLOOR = 1.3
POLICY = ThresholdPolicy(policy="sigma", k_sigma=4.0, warmup=30, alpha=0.02)
ALERTS = AlertPolicy(n_anomalous=3, window_m=10, quiet_records=20)
KEYS = [f"machine-{i}" for i in range(40)]
GROUPS = 16


def batches(seed: int = 3) -> list[tuple[list[str], np.ndarray]]:
    """40 keys over 30 batches of 256 records: normal scores, with bursts of anomalies for a
    few keys so that episodes fire and resolve."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(30):
        keys = [KEYS[i] for i in rng.integers(0, len(KEYS), 256)]
        scores = rng.normal(1.0, 0.1, 256)
        if b in (12, 13, 20):
            burst = np.isin(keys, KEYS[:5])
            scores[burst] = 50.0
        out.append((keys, scores))
    return out


def run(state: ThresholdState, plan: list[tuple[list[str], np.ndarray]]) -> list[Verdicts]:
    out, offset = [], 0
    for keys, scores in plan:
        n = len(keys)
        offsets = np.arange(offset, offset + n, dtype=np.int64)
        out.append(
            state.apply(
                model_version="m1", floor=FLOOR, keys=keys, scores=scores,
                ts=1.7e9 + offsets.astype(np.float64), partitions=offsets % 4, offsets=offsets,
            )
        )  # fmt: skip
        offset += n
    return out


def evalsha_calls(cluster: PrivateRedisCluster) -> tuple[int, int]:
    """EVALSHA calls that ran (not refused for NOSCRIPT) and COMMAND GETKEYS calls (a round
    trip each) over every node so far."""
    calls = getkeys = 0
    for port in cluster.ports:
        stats = redis.Redis(port=port).info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {})
        calls += evalsha.get("calls", 0) - evalsha.get("failed_calls", 0)
        calls -= evalsha.get("rejected_calls", 0)
        getkeys += stats.get("cmdstat_command|getkeys", {}).get("calls", 0)
    return calls, getkeys


def test_a_cluster_judges_and_alerts_exactly_as_one_server_does(
    redis_cluster: PrivateRedisCluster, redis_url: str, redis_prefix: str
) -> None:
    plan = batches()
    single = ThresholdState(connect(redis_url), prefix=redis_prefix, thresholds=POLICY,
                            alerts=ALERTS)  # fmt: skip
    on_cluster = ThresholdState(
        connect(redis_cluster.url, cluster=True), prefix=redis_prefix, thresholds=POLICY,
        alerts=ALERTS, slot_groups=GROUPS, wait_replicas=1,
    )  # fmt: skip
    expected = run(single, plan)
    before, _ = evalsha_calls(redis_cluster)
    got = run(on_cluster, plan)
    calls, getkeys = evalsha_calls(redis_cluster)

    for want, have in zip(expected, got, strict=True):
        assert not have.degraded
        np.testing.assert_array_equal(have.thresholds, want.thresholds)
        np.testing.assert_array_equal(have.is_anomaly, want.is_anomaly)
        assert have.alerts == want.alerts  # same transitions, same ids, in batch order
    statuses = Counter(a.status for v in got for a in v.alerts)
    assert statuses["firing"] >= 5 and statuses["resolved"] >= 5, statuses

    # One call per slot group present in each batch, routed without asking a node for keys.
    layout = KeyLayout(redis_prefix, cluster=True, slot_groups=GROUPS)
    groups_per_batch = [len({layout.group(k) for k in keys}) for keys, _ in plan]
    assert calls - before == sum(groups_per_batch) and getkeys == 0
    assert min(groups_per_batch) > 1  # the batches really were split
    # The state is spread over all three masters.
    masters = {redis_cluster.master_of(layout.alert(k)) for k in KEYS}
    assert len(masters) == 3

    # A redelivered batch learns nothing and re-announces only what it caused, as on one server.
    replay_single, replay_cluster = run(single, plan[12:14]), run(on_cluster, plan[12:14])
    for want, have in zip(replay_single, replay_cluster, strict=True):
        np.testing.assert_array_equal(have.thresholds, want.thresholds)
        assert have.alerts == want.alerts and have.replayed_alerts == want.replayed_alerts
    reading = on_cluster.snapshot(KEYS[0], model_version="m1", floor=FLOOR)
    assert reading == single.snapshot(KEYS[0], model_version="m1", floor=FLOOR)


def test_the_registry_publishes_rolls_back_and_locks_on_a_cluster(
    redis_cluster: PrivateRedisCluster, redis_prefix: str, tiny_bundle: Path, other_bundle: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    from model.store import ModelStore

    settings = load_settings(redis={"url": redis_cluster.url, "cluster": True,
                                    "key_prefix": redis_prefix})  # fmt: skip
    client = connect_from_settings(settings)
    first = registry.publish_manual(client, redis_prefix, tiny_bundle)
    second = registry.publish_manual(client, redis_prefix, other_bundle)
    pointer = registry.current(client, redis_prefix)
    assert pointer is not None and pointer.version == second["version"]
    back = registry.rollback(client, redis_prefix, ModelStore(tmp_path / "store"), None)
    assert back["version"] == first["version"]
    assert [e["decision"] for e in registry.history(client, redis_prefix)] == [
        "published", "published", "rollback",
    ]  # fmt: skip
    # The three registry keys share one slot (the publish script would be refused otherwise).
    slots = {
        client.keyslot(registry.pointer_key(redis_prefix, cluster=True)),
        client.keyslot(registry.history_key(redis_prefix, cluster=True)),
        client.keyslot(registry.lock_key(redis_prefix, cluster=True)),
    }
    assert len(slots) == 1
    lock, rival = (registry.RetrainLock(client, redis_prefix, 30) for _ in range(2))
    assert lock.acquire() and not rival.acquire()
    lock.release()
    assert rival.acquire()
    rival.release()


def test_a_brace_in_the_prefix_is_refused_in_cluster_mode() -> None:
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="must not contain"):
        load_settings(redis={"cluster": True, "key_prefix": "ama{x}"})
