"""The long-running jobs: ``worker`` and ``retrain``.

Settings: flags > AMA_* environment > --config YAML > defaults (docs/contracts.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamer.cli.options import (
    Bootstrap,
    Config,
    Device,
    LogLevel,
    RedisPrefix,
    RedisUrl,
    Store,
    seconds,
)

app = typer.Typer()

_Topic = Annotated[str | None, typer.Option(help="Topic name.")]


@app.command("worker")
def worker(
    config: Config = None,
    bootstrap: Bootstrap = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group id.")] = None,
    input_topic: _Topic = None,
    scores_topic: _Topic = None,
    alerts_topic: _Topic = None,
    dlq_topic: _Topic = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Bundle dir (default: published).")
    ] = None,
    device: Device = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    max_records: Annotated[
        int | None, typer.Option("--max-records", help="Batch size bound.")
    ] = None,
    max_wait_ms: Annotated[
        int | None, typer.Option("--max-wait-ms", help="Batch time bound.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Must be free; 0 = any. Default: 9400 or any free."),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option("--precision", help="auto, float32 or bfloat16 (what scoring computes in)."),
    ] = None,
    runner: Annotated[
        str, typer.Option("--runner", help="confluent (librdkafka) or faust (faust-streaming).")
    ] = "confluent",
    guarantee: Annotated[
        str | None,
        typer.Option("--guarantee", help="at-least-once (default) or exactly-once."),
    ] = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Run one worker of the consumer group until SIGTERM/SIGINT (then drain and commit)."""
    from schemas.settings import load_settings
    from streamer.logs import configure_logging
    from streamer.worker.assemble import run_worker

    if runner not in ("confluent", "faust"):
        raise typer.BadParameter("--runner must be confluent or faust")
    configure_logging(log_level)
    settings = load_settings(
        config,
        kafka={"bootstrap": bootstrap, "group_id": group, "input_topic": input_topic,
               "scores_topic": scores_topic, "alerts_topic": alerts_topic, "dlq_topic": dlq_topic},
        redis={"url": redis_url, "key_prefix": redis_prefix},
        model={"bundle": model, "device": device, "precision": precision},
        batch={"max_records": max_records, "max_wait_ms": max_wait_ms},
        metrics={"port": metrics_port},
        worker={"guarantee": guarantee},
    )  # fmt: skip
    run_worker(settings, runner=runner)  # type: ignore[arg-type]


@app.command("retrain")
def retrain(
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit (CronJob).")] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Run a cycle every DURATION (6h, 30m, ...).")
    ] = None,
    on_drift: Annotated[
        bool, typer.Option("--on-drift", help="With --every: start early when scores drift.")
    ] = False,
    config: Config = None,
    bootstrap: Bootstrap = None,
    input_topic: _Topic = None,
    scores_topic: _Topic = None,
    labels_topic: _Topic = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    store: Store = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Training window (24h, 90m, ...).")
    ] = None,
    max_records: Annotated[int | None, typer.Option("--max-records")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    device: Device = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Retrain from recent normal traffic; publish the challenger only if it is not worse.

    The challenger is gated against the serving champion (docs/retrain.md). Settings as for
    the worker, plus `retrain.*`.
    """
    import logging

    import orjson

    from schemas.settings import load_settings
    from streamer.lifecycle import retrain as job
    from streamer.logs import configure_logging

    if once == (every is not None) or (on_drift and every is None):
        raise typer.BadParameter("give one of --once and --every (--on-drift needs --every)")
    configure_logging(log_level)
    settings = load_settings(
        config,
        kafka={"bootstrap": bootstrap, "input_topic": input_topic, "scores_topic": scores_topic},
        redis={"url": redis_url, "key_prefix": redis_prefix},
        retrain={"store": store, "labels_topic": labels_topic, "max_records": max_records,
                 "window_s": seconds(window) if window else None, "epochs": epochs,
                 "device": device},
    )  # fmt: skip
    log = logging.getLogger("streamer.lifecycle.retrain")
    log.info("effective configuration", extra={"settings": settings.redacted_dict()})
    job.preflight(settings)
    if every is None:
        result = job.run_cycle(settings)
        typer.echo(f"decision: {result.decision}")
        if result.entry is not None:
            typer.echo(orjson.dumps(result.entry).decode())
        return
    job.run_schedule(settings, every_s=seconds(every), on_drift=on_drift)
