"""Shared fixtures: the real local Kafka broker and Redis, factories for fresh names, real tiny
model bundles, and a private redis-server.

Integration tests talk to the broker and Redis that `ama-stream local up` started (or to the ones
named by AMA_TEST_BOOTSTRAP / AMA_TEST_REDIS_URL). Every test gets its own topics, consumer
groups and Redis key prefix, so tests never see each other's data and never need a flush.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch
from confluent_kafka.admin import AdminClient, NewTopic
from helpers import DIM, PrivateRedis, PrivateRedisCluster, Topics, free_ports

from model.testing import train_tiny_bundle

torch.set_num_threads(1)  # 2 shared cores: keep the tests from fighting each other

BOOTSTRAP = os.environ.get("AMA_TEST_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("AMA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long variants (``slow``) run only when asked for: CI runs their short variants."""
    if os.environ.get("AMA_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow variant: set AMA_SLOW_TESTS=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _unique(stem: str) -> str:
    return f"test.{stem}.{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of the real broker; fails loudly if it does not answer."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    try:
        admin.list_topics(timeout=10)
    except Exception as exc:  # pragma: no cover - only when the stack is down
        pytest.fail(f"Kafka at {BOOTSTRAP} does not answer ({exc}); run `ama-stream local up`")
    return BOOTSTRAP


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis server; fails loudly if it does not answer PING."""
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # pragma: no cover - only when the stack is down
        pytest.fail(f"Redis at {REDIS_URL} does not answer ({exc}); run `ama-stream local up`")
    return REDIS_URL


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create fresh topics for one test and delete them afterwards."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    created: list[str] = []

    def make(stem: str = "t", partitions: int = 1) -> str:
        name = _unique(stem)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        futures[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:
        for future in admin.delete_topics(created).values():
            future.result(timeout=30)


@pytest.fixture
def group_factory() -> Callable[[], str]:
    """Fresh consumer-group ids, so no test inherits another's committed offsets."""
    return lambda: _unique("group")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix private to one test; its keys are deleted afterwards."""
    prefix = _unique("ama")
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def topics(topic_factory: Callable[..., str]) -> Topics:
    """A worker's four topics; the input has 4 partitions."""
    return Topics(
        topic_factory("in", partitions=4),
        topic_factory("scores"),
        topic_factory("alerts"),
        topic_factory("dlq"),
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trained 38-dim bundle (a few seconds, once per session)."""
    return train_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", dim=DIM, seed=0)


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second valid bundle with a different model version (for hot reload)."""
    return train_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-2", dim=DIM, seed=1)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis the test may stop and restart (outage tests)."""
    server = PrivateRedis(free_ports(1)[0])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    """A Redis Cluster of three masters, each with a replica, shared by the tests that do not
    break it (each uses its own key prefix); tests that fail a master over start their own."""
    cluster = PrivateRedisCluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=1)
    cluster.start()
    yield cluster
    cluster.stop()
