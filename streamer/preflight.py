"""Start-up checks: every service a job needs answers, accepts our credentials, and has the
topics the job uses; otherwise the job exits at once with one line saying which and why.

Rules (docs/worker.md, "Failure semantics"): a refusal (wrong password, unknown user, missing
permission, TLS certificate not trusted) ends the check at once, since waiting cannot help; a
service that does not answer (down, wrong address, a name that does not resolve, SASL against a
plaintext listener) is retried until ``startup_timeout_s`` and then reported with the last
error seen. After start-up the same outages are waited out instead (the worker backs off and
reports not-ready), because a running group must survive a broker or Redis restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from schemas.errors import AmaStreamError
from schemas.settings import Settings
from streamer.logs import kafka_logger
from streamer.state.client import RedisClient, classify

__all__ = ["KAFKA_REFUSALS", "StartupError", "check_kafka", "check_redis"]


class StartupError(AmaStreamError):
    """A service or topic a job needs is not there, or refuses it; the job does not start."""


#: librdkafka errors that mean "they will never let us in" rather than "not reachable yet".
KAFKA_REFUSALS = frozenset(
    (
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,  # e.g. a broker certificate that the configured CA does not trust
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    )
)


def check_kafka(settings: Settings, topics: Sequence[str], *, timeout_s: float) -> None:
    """The broker answers a metadata request with our credentials within ``timeout_s``, and
    every one of ``topics`` exists; :class:`StartupError` otherwise."""
    errors: list[KafkaError] = []
    refused = threading.Event()

    def on_error(err: KafkaError) -> None:
        errors.append(err)
        if err.code() in KAFKA_REFUSALS or err.fatal():
            refused.set()

    config: dict[str, Any] = {
        **settings.kafka.client_config(),
        "error_cb": on_error,
        "logger": kafka_logger(),
    }
    admin = AdminClient(config)
    where = settings.kafka.bootstrap
    deadline = time.monotonic() + timeout_s
    metadata: Any = None
    while metadata is None:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            errors.append(exc.args[0])
            if exc.args[0].code() in KAFKA_REFUSALS:
                refused.set()
        admin.poll(0)  # serves error_cb
        if refused.is_set():
            raise StartupError(f"Kafka at {where} refused this client: {_last(errors)}")
        if metadata is None and time.monotonic() >= deadline:
            raise StartupError(
                f"Kafka at {where} did not answer within {timeout_s:.0f} s "
                f"(last error: {_last(errors)})"
            )
    missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error]
    if missing:
        raise StartupError(
            f"topic(s) {', '.join(missing)} do not exist on {where}: create them with "
            "`ama-stream topics create`"
        )


def check_redis(connect: Callable[[], RedisClient], *, timeout_s: float, where: str) -> None:
    """Redis answers PING with our credentials within ``timeout_s``; :class:`StartupError`
    otherwise (at once when it refuses the credentials).

    ``connect`` makes the client inside the wait: a Redis Cluster client already needs a node
    to answer when it is made."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connect().ping()
            return
        except redis.RedisError as exc:
            if classify(exc) == "refused":
                raise StartupError(f"Redis at {where} refused this client: {exc}") from None
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"Redis at {where} did not answer within {timeout_s:.0f} s (last error: {exc})"
                ) from None
        time.sleep(0.5)


def _last(errors: list[KafkaError]) -> str:
    return errors[-1].str() if errors else "none reported"
