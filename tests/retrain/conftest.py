"""Fixtures for the retrain tests: a published tiny champion and an isolated deployment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from retrain_support import DIM, Deployment, make_settings

from model.testing import train_tiny_bundle
from streamer.reload import publish_model
from streamer.state import connect

torch.set_num_threads(1)  # 2 shared cores: keep the tests from fighting each other


@pytest.fixture(scope="session")
def champion_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny 38-dim bundle, trained once per session, on the 'old normal'."""
    return train_tiny_bundle(tmp_path_factory.mktemp("champion") / "champion", dim=DIM, seed=0)


@pytest.fixture
def make_deployment(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topic_factory: Callable[..., str],
    group_factory: Callable[[], str],
    champion_bundle: Path,
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
        publish_model(connect(redis_url), redis_prefix, champion_bundle)
        return Deployment(settings, store)

    return make
