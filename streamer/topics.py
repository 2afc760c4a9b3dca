"""The topics a deployment needs, named by the settings, and creating them (idempotently).

The local broker, like most production clusters, does not create topics on first use: a typo
in a topic name must fail loudly (the worker's start-up check names the missing topic), so the
topics are created on purpose, by ``ama-stream topics create``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import ConfigError
from schemas.settings import Settings
from streamer.logs import kafka_logger

__all__ = ["ROLES", "TopicPlan", "create_topics", "plan"]

#: Kept longer than the broker's default week: a dead letter or an alert is what someone
#: looks at after the fact. Overridable per topic (``--config dlq.retention.ms=...``).
_RETENTION_DAYS = {"alerts": 30, "dlq": 30}
ROLES = ("input", "scores", "alerts", "dlq", "labels")


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """One topic to create: its role, name, partitions, replication and topic configs."""

    role: str
    name: str
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


def plan(
    settings: Settings, *, partitions: int, replication: int, configs: list[str]
) -> list[TopicPlan]:
    """The worker's topics (and the retrain job's labels topic, if one is set).

    ``configs`` are ``ROLE.NAME=VALUE`` strings, e.g. ``dlq.retention.ms=604800000``.
    Every topic gets ``partitions``: the scores and alerts topics are keyed by record key, so
    their consumers scale like the workers do.
    """
    kafka = settings.kafka
    names = {
        "input": kafka.input_topic,
        "scores": kafka.scores_topic,
        "alerts": kafka.alerts_topic,
        "dlq": kafka.dlq_topic,
        "labels": settings.retrain.labels_topic,
    }
    extra: dict[str, dict[str, str]] = {role: {} for role in ROLES}
    for item in configs:
        role, _, rest = item.partition(".")
        name, eq, value = rest.partition("=")
        if role not in extra or not name or not eq:
            raise ConfigError(f"topic config {item!r} is not ROLE.NAME=VALUE with ROLE in {ROLES}")
        extra[role][name] = value
    return [
        TopicPlan(role, topic, partitions, replication, {**_defaults(role), **extra[role]})
        for role, topic in names.items()
        if topic is not None
    ]


def _defaults(role: str) -> dict[str, str]:
    days = _RETENTION_DAYS.get(role)
    return {"retention.ms": str(days * 86_400_000)} if days else {}


def create_topics(
    settings: Settings, topics: list[TopicPlan], *, timeout_s: float = 30
) -> list[str]:
    """Create what is missing; leave what exists as it is. Returns one line per topic."""
    config: dict[str, Any] = {**settings.kafka.client_config(), "logger": kafka_logger()}
    admin = AdminClient(config)
    existing = admin.list_topics(timeout=timeout_s).topics
    lines = []
    wanted = [t for t in topics if t.name not in existing]
    for t in topics:
        if t.name in existing:
            have = len(existing[t.name].partitions)
            note = "" if have >= t.partitions else f"; fewer than {t.partitions}, not changed"
            lines.append(f"{t.role:<7} {t.name}: exists ({have} partitions{note})")
    if not wanted:
        return lines
    futures = admin.create_topics(
        [NewTopic(t.name, t.partitions, t.replication, config=t.config) for t in wanted],
        request_timeout=timeout_s,
    )
    for t in wanted:
        try:
            futures[t.name].result(timeout_s)
            lines.append(f"{t.role:<7} {t.name}: created ({t.partitions} partitions, "
                         f"replication {t.replication})")  # fmt: skip
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created meanwhile
                raise
            lines.append(f"{t.role:<7} {t.name}: exists")
    return lines
