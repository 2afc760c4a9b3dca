"""The dashboard's moving parts: two topic readers, the fleet poll thread, Redis readings.

:class:`Dashboard` owns them and the :class:`~streamer.dashboard.state.DashboardState` they
fill; streamer/dashboard/server.py serves it over HTTP. Start-up checks Kafka, Redis and the
topics first (streamer/preflight.py), so a misconfiguration ends the command with one line;
after that an outage of either is waited out and shown on the page.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from confluent_kafka import KafkaError

from schemas.settings import Settings
from streamer.dashboard.fleet import FleetPoller
from streamer.dashboard.ingest import TopicReader
from streamer.dashboard.state import DashboardState
from streamer.preflight import check_kafka, check_redis
from streamer.state.client import connect_from_settings, redis_where
from streamer.state.verdicts import ThresholdState

__all__ = ["Dashboard"]

log = logging.getLogger(__name__)


class Dashboard:
    """Reads the scores and alerts topics and polls Kafka and Redis into one state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = DashboardState(settings)
        self._redis = connect_from_settings(settings)
        self._thresholds = ThresholdState.from_settings(settings, client=self._redis)
        self._poller = FleetPoller(settings, self._redis, self.state.health)
        self._readers: list[TopicReader] = []
        self._stop = threading.Event()
        self._poll_thread = threading.Thread(target=self._poll, name="dash-poll", daemon=True)

    def preflight(self) -> None:
        """Kafka, Redis and the four topics answer, or one clear StartupError."""
        kafka, timeout = self.settings.kafka, self.settings.worker.startup_timeout_s
        topics = (kafka.input_topic, kafka.scores_topic, kafka.alerts_topic, kafka.dlq_topic)
        check_kafka(self.settings, topics, timeout_s=timeout)
        check_redis(lambda: self._redis, timeout_s=timeout, where=redis_where(self.settings))

    def start(self) -> Dashboard:
        """Preflight, one fleet refresh, then the readers and the poll thread."""
        self.preflight()
        self.state.set_fleet(self._poller.refresh())
        cfg, kafka = self.settings.dashboard, self.settings.kafka
        self._readers = [
            TopicReader(self.settings, kafka.alerts_topic, backfill_s=cfg.alerts_backfill_s,
                        handle=self.state.add_alerts, on_error=self._on_kafka_error).start(),
            TopicReader(self.settings, kafka.scores_topic, backfill_s=cfg.backfill_s,
                        handle=self.state.add_scores, on_error=self._on_kafka_error).start(),
        ]  # fmt: skip
        self._poll_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._poll_thread.is_alive():
            self._poll_thread.join(15)
        for reader in self._readers:
            reader.stop()
        self._poller.close()

    def ready(self) -> bool:
        """Reading both topics, and Kafka and Redis answered the last poll."""
        health = self.state.health
        return len(self._readers) == 2 and health.kafka_ok and health.redis_ok

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.state.health.kafka(False, err.str())

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.dashboard.poll_s):
            try:
                self.state.set_fleet(self._poller.refresh())
            except Exception:  # keep polling: the page shows the last good values
                log.exception("dashboard poll failed")

    def reading(self, key: str) -> dict[str, Any]:
        """``key``'s threshold state in Redis now (ThresholdState.snapshot: the threshold its
        next record gets, warm-up, statistics, alert state), or why there is none."""
        fleet = self.state.fleet
        if fleet.model is None:
            return {"available": False, "reason": "no model published"}
        if fleet.floor is None:
            return {"available": False, "reason": "the serving bundle is not readable here"}
        try:
            got = self._thresholds.snapshot(
                key, model_version=fleet.model["version"], floor=fleet.floor
            )
        except redis.RedisError as exc:
            self.state.health.redis(False, str(exc))
            return {"available": False, "reason": f"Redis unreachable: {exc}"}
        stats = got.stats
        return {
            "available": True,
            "model_version": fleet.model["version"],
            "threshold": got.threshold,
            "warming_up": got.warming_up,
            "alert_state": got.alert_state,
            "alert_id": got.alert_id,
            "ttl_s": got.ttl_s,
            "n": stats.n if stats else 0,
            "mean": stats.mean if stats else None,
            "std": stats.std if stats else None,
        }
