"""Fixtures for the worker tests: a real tiny model bundle (trained once) and fresh topics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from streamer_support import DIM, PrivateRedis, Topics, free_ports

from model.detector import AMADetector
from model.testing import train_tiny_bundle

torch.set_num_threads(1)  # 2 shared cores: keep the tests from fighting each other


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trained 38-dim bundle (a few seconds, once per session)."""
    return train_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", dim=DIM, seed=0)


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second valid bundle with a different model version (for hot reload)."""
    return train_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-2", dim=DIM, seed=1)


@pytest.fixture
def detector(tiny_bundle: Path) -> AMADetector:
    return AMADetector.load(tiny_bundle, device="cpu")


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Topics:
    return Topics(
        topic_factory("in", partitions=4),
        topic_factory("scores"),
        topic_factory("alerts"),
        topic_factory("dlq"),
    )


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis the test may stop and restart (outage tests)."""
    server = PrivateRedis(free_ports(1)[0])
    server.start()
    yield server
    server.stop()
