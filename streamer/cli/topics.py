"""``ama-stream topics create``: the topics a deployment needs, named by the settings."""

from __future__ import annotations

from typing import Annotated

import typer

from streamer.cli.options import Bootstrap, Config

app = typer.Typer(no_args_is_help=True, help="The Kafka topics a deployment needs.")


@app.command("create")
def create(
    config: Config = None,
    bootstrap: Bootstrap = None,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions of every topic.")
    ] = 8,
    replication: Annotated[
        int, typer.Option("--replication", min=1, help="Replication factor.")
    ] = 1,
    topic_config: Annotated[
        list[str] | None,
        typer.Option(
            "--config-entry",
            help="ROLE.NAME=VALUE topic config, repeatable (ROLE: input, scores, alerts, dlq, "
            "labels), e.g. dlq.retention.ms=604800000.",
        ),
    ] = None,
) -> None:
    """Create the input, scores, alerts and DLQ topics (and the labels topic, if
    `retrain.labels_topic` is set) that do not exist yet; existing ones are left as they are."""
    from schemas.settings import load_settings
    from streamer.topics import create_topics, plan

    settings = load_settings(config, kafka={"bootstrap": bootstrap})
    topics = plan(
        settings, partitions=partitions, replication=replication, configs=topic_config or []
    )
    for line in create_topics(settings, topics):
        typer.echo(line)
