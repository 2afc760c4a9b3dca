"""One SASL_SSL broker for the whole session (a JVM start costs 10-20 s on two cores), shared
by every security test; Redis servers with ACL users and TLS are cheap and made per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from secure_stack import SecureKafka, SecureRedis


@pytest.fixture(scope="session")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    broker = SecureKafka(tmp_path_factory.mktemp("secure-kafka"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def tls_redis(secure_kafka: SecureKafka) -> Iterator[SecureRedis]:
    """Redis with TLS (a certificate from the broker's CA) and the documented ACL user."""
    server = SecureRedis("ama", secure_kafka.pki)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def acl_redis() -> Iterator[SecureRedis]:
    server = SecureRedis("ama")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pki(secure_kafka: SecureKafka) -> Path:
    return secure_kafka.pki
