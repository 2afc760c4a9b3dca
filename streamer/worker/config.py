"""The worker's Kafka consumer options and loop timings."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from schemas.settings import Settings

__all__ = ["WorkerOptions", "consumer_config"]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Loop timings; the defaults suit production, tests shorten some."""

    top_k: int = 3
    # An ack wait longer than this pauses the partitions (back-pressure) and keeps polling.
    pause_after_s: float = 0.5
    # On revoke, how long to wait for the in-flight batch's acks before dropping it. Must stay
    # well below the rebalance timeout (max.poll.interval.ms, 300 s) so the group is not held up.
    revoke_budget_s: float = 10.0
    # On SIGTERM/SIGINT, how long to wait for the last batch's acks before closing uncommitted.
    drain_budget_s: float = 30.0
    # Between tries of a batch that a service could not process (device out of memory).
    service_retry_s: float = 1.0


def consumer_config(settings: Settings) -> dict[str, Any]:
    """Consumer options; ``kafka.extra`` (inside ``client_config``) is applied last.

    A 10 s session (librdkafka's default is 45 s) moves a killed worker's partitions to the
    others within seconds; heartbeats come from librdkafka's own thread every 3 s, so a slow
    batch cannot miss them (a stuck loop is caught by ``max.poll.interval.ms`` instead).
    """
    return {
        "group.id": settings.kafka.group_id,
        "enable.auto.commit": False,  # commits follow produce acks, never a timer
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # a new group must not skip records already written
        "partition.assignment.strategy": "roundrobin",  # eager; see the module docstring
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 3_000,
        "statistics.interval.ms": 5000,  # per-partition lag and broker state for the metrics
        # Names the member in the group's description, so the dashboard (and kafka-consumer-
        # groups.sh) can say which worker owns which partition; kafka.extra may override it.
        "client.id": f"ama-worker-{socket.gethostname()}-{os.getpid()}",
        **settings.kafka.client_config(),
    }
