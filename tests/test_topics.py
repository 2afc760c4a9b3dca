"""`ama-stream topics create`: creates what a deployment needs with its partitions and topic
configs, and run again changes nothing (real broker)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from streamer.cli import app

pytestmark = pytest.mark.integration


def test_create_is_idempotent_and_applies_partitions_and_configs(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    env = {f"AMA_KAFKA__{role.upper()}_TOPIC": f"test.topics.{run}.{role}"
           for role in ("input", "scores", "alerts", "dlq")}  # fmt: skip
    args = ["topics", "create", "--bootstrap", kafka_bootstrap, "--partitions", "3",
            "--config-entry", "input.retention.ms=3600000"]  # fmt: skip
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        first = CliRunner().invoke(app, args, env=env)
        assert first.exit_code == 0, first.output
        assert first.output.count(": created (3 partitions, replication 1)") == 4
        again = CliRunner().invoke(app, args, env=env)
        assert again.exit_code == 0 and again.output.count(": exists (3 partitions)") == 4

        metadata = admin.list_topics(timeout=10).topics
        assert all(len(metadata[name].partitions) == 3 for name in env.values())
        resources = [
            ConfigResource("topic", env[f"AMA_KAFKA__{r}_TOPIC"]) for r in ("INPUT", "DLQ")
        ]
        configs = [f.result(10) for f in admin.describe_configs(resources).values()]
        retention = sorted(int(c["retention.ms"].value) for c in configs)
        assert retention == [3_600_000, 30 * 86_400_000]  # as asked; the DLQ's default 30 days

        bad = CliRunner().invoke(app, [*args, "--config-entry", "nonsense"], env=env)
        assert bad.exit_code != 0 and "ROLE.NAME=VALUE" in str(bad.exception)
    finally:
        for future in admin.delete_topics(list(env.values())).values():
            future.result(30)
