"""librdkafka's error and statistics callbacks for one worker.

Errors: a refusal (authentication, authorisation, an untrusted certificate) or a fatal client
error ends the worker with one clear line, since waiting cannot help; everything else is an
outage librdkafka retries by itself, logged at most once per kind per period. Statistics
(every 5 s): per-partition consumer lag for the metrics, and whether any broker is up, which
readiness reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from confluent_kafka import KafkaError

from schemas.errors import ServiceError
from streamer.preflight import KAFKA_REFUSALS
from streamer.worker.metrics import WorkerMetrics
from streamer.worker.offsets import Partition

__all__ = ["ERROR_LOG_EVERY_S", "KafkaEvents"]

log = logging.getLogger(__name__)

# librdkafka reports every reconnect attempt (several a second while a broker is down); one
# line per distinct error per this many seconds says the same without flooding the log.
ERROR_LOG_EVERY_S = 10.0


class KafkaEvents:
    """``error_cb`` and ``stats_cb`` for the worker's consumer and producer."""

    def __init__(self, metrics: WorkerMetrics, assigned: Callable[[], set[Partition]]) -> None:
        self._metrics = metrics
        self._assigned = assigned
        self._logged: dict[int, float] = {}

    def on_error(self, err: KafkaError) -> None:
        """Raised from here, an exception ends the ``consume``/``poll`` call that served it."""
        if err.fatal() or err.code() in KAFKA_REFUSALS:
            raise ServiceError(f"Kafka refused this worker: {err.str()}", fatal=True)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._metrics.set_broker_up(False)
        now = time.monotonic()
        if now - self._logged.get(err.code(), -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self._logged[err.code()] = now
            log.warning("kafka: %s", err.str())

    def on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        brokers = stats.get("brokers", {}).values()
        self._metrics.set_broker_up(any(b.get("state") == "UP" for b in brokers))
        assigned = self._assigned()
        lag: dict[Partition, int] = {}
        for topic, info in stats.get("topics", {}).items():
            for p, part in info.get("partitions", {}).items():
                partition = int(p)
                if (topic, partition) in assigned and part.get("consumer_lag", -1) >= 0:
                    lag[(topic, partition)] = int(part["consumer_lag"])
        self._metrics.set_lag(lag)
