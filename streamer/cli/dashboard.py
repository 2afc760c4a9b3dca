"""``ama-stream dashboard``: the read-only web page over the scores and alerts topics and Redis.

Settings: flags > AMA_* environment > --config YAML > defaults (docs/contracts.md); the
``dashboard.*`` section has its own (docs/dashboard.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamer.cli.options import Bootstrap, Config, LogLevel, RedisPrefix, RedisUrl

app = typer.Typer()

_Topic = Annotated[str | None, typer.Option(help="Topic name.")]


@app.command("dashboard")
def dashboard(
    config: Config = None,
    bootstrap: Bootstrap = None,
    group: Annotated[
        str | None, typer.Option("--group", help="The workers' consumer group (its lag is shown).")
    ] = None,
    input_topic: _Topic = None,
    scores_topic: _Topic = None,
    alerts_topic: _Topic = None,
    dlq_topic: _Topic = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    port: Annotated[
        int | None, typer.Option("--port", help="HTTP port (default 8400; 0 = any free).")
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Serve the live web dashboard: fleet, alerts, every key's score against its threshold,
    the heat map of the most anomalous keys, and the model history. Read-only."""
    from schemas.settings import load_settings
    from streamer.dashboard.server import run_dashboard
    from streamer.logs import configure_logging

    configure_logging(log_level)
    settings = load_settings(
        config,
        kafka={"bootstrap": bootstrap, "group_id": group, "input_topic": input_topic,
               "scores_topic": scores_topic, "alerts_topic": alerts_topic, "dlq_topic": dlq_topic},
        redis={"url": redis_url, "key_prefix": redis_prefix},
        dashboard={"port": port},
    )  # fmt: skip
    run_dashboard(settings)
