"""Hot reload and retrain with the registry on a Redis Cluster: a published bundle reaches the
running worker, and a retrain cycle (lock, window, gate, fenced publish) publishes a
challenger that the worker then serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import PrivateRedisCluster
from retrain_support import Deployment, make_settings, wait_for_version

from model.detector import AMADetector
from model.store import ModelStore
from streamer.lifecycle.registry import publish_manual
from streamer.lifecycle.retrain import run_cycle
from streamer.state.client import connect_from_settings

pytestmark = pytest.mark.integration


def test_hot_reload_and_a_retrain_cycle_work_on_a_cluster(
    kafka_bootstrap: str,
    redis_cluster: PrivateRedisCluster,
    redis_prefix: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[], str],
    tiny_bundle: Path,
    other_bundle: Path,
    tmp_path: Path,
) -> None:
    topics = {name: topic_factory(name) for name in ("scores", "alerts", "dlq", "labels")}
    topics["input"] = topic_factory("in", partitions=2)
    settings = make_settings(
        kafka_bootstrap, redis_cluster.url, redis_prefix, topics, tmp_path / "store",
        group_factory(), redis_options={"cluster": True, "slot_groups": 8},
    )  # fmt: skip
    client = connect_from_settings(settings)
    publish_manual(client, redis_prefix, tiny_bundle)
    dep = Deployment(settings, tmp_path / "store")
    other = AMADetector.load(other_bundle).model_version
    champion = AMADetector.load(tiny_bundle).model_version
    with dep.worker(tiny_bundle) as worker:
        publish_manual(client, redis_prefix, other_bundle)
        wait_for_version(worker, other)
        # into the model store, as `model publish` does: the retrain job reads only from it
        publish_manual(client, redis_prefix, tiny_bundle, store=ModelStore(tmp_path / "store"))
        wait_for_version(worker, champion)
        dep.shift_window()
        result = run_cycle(settings)
        assert result.decision == "published" and result.entry is not None
        wait_for_version(worker, result.entry["version"])
    assert [h["decision"] for h in dep.history()] == ["published", "published", "published"]
    assert dep.serving() == result.entry["version"]
