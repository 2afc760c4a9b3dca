"""Fixtures for the lifecycle tests: an isolated deployment with the tiny champion published."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from retrain_support import Deployment, make_settings

from model.store import ModelStore
from streamer.lifecycle.registry import publish_manual
from streamer.state.client import connect


@pytest.fixture
def make_deployment(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[], str],
    tiny_bundle: Path,
    tmp_path: Path,
) -> Callable[..., Deployment]:
    """Fresh topics (input with 2 partitions), a model store, the champion published."""

    def make(**thresholds: object) -> Deployment:
        topics = {name: topic_factory(name) for name in ("scores", "alerts", "dlq", "labels")}
        topics["input"] = topic_factory("in", partitions=2)
        store = tmp_path / "store"
        settings = make_settings(
            kafka_bootstrap, redis_url, redis_prefix, topics, store, group_factory(),
            **thresholds,
        )  # fmt: skip
        # Into the model store, as `model publish` does: the retrain job reads only from it.
        publish_manual(connect(redis_url), redis_prefix, tiny_bundle, store=ModelStore(store))
        return Deployment(settings, store)

    return make
