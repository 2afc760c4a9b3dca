"""Developer and operator tools: ``produce``, ``demo``, ``bench``, ``schemas export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamer.cli.options import Bootstrap, Config, Device, RedisUrl

app = typer.Typer()
schemas_app = typer.Typer(no_args_is_help=True, help="The wire contracts (JSON Schema).")
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write one JSON Schema file per wire contract and the settings."""
    from schemas.export import export_schemas

    for path in export_schemas(out):
        typer.echo(f"wrote {path}")


@app.command("produce")
def produce(
    data: Annotated[Path, typer.Option("--data", help=".npy/.npz/.csv vectors or MNIST idx.")],
    topic: Annotated[str, typer.Option("--topic", help="Input topic (must exist).")],
    config: Config = None,
    bootstrap: Bootstrap = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Records/s (default: max).")] = None,
    keys: Annotated[int, typer.Option("--keys", help="Keys, assigned round robin.")] = 1,
    key_prefix: Annotated[
        str | None, typer.Option("--key-prefix", help="Default: file stem.")
    ] = None,
    bad_fraction: Annotated[
        float, typer.Option("--bad-fraction", help="Malformed records inserted per row.")
    ] = 0.0,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N rows.")] = None,
    json_images: Annotated[
        bool, typer.Option("--json-images", help="ImageRecord JSON instead of binary frames.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Replay a dataset into TOPIC as SensorRecord/ImageRecord, optionally with malformed ones.

    Row i gets key "<prefix>-<i mod K>"; ts is the wall clock at sending.
    """
    from schemas.settings import load_settings
    from streamer.devtools.replay import load_dataset, replay
    from streamer.logs import configure_logging
    from streamer.preflight import check_kafka

    if not 0.0 <= bad_fraction < 1.0 or keys < 1:
        raise typer.BadParameter("--bad-fraction must be in [0, 1) and --keys >= 1")
    configure_logging("WARNING")  # librdkafka's complaints as JSON lines, like every job's
    settings = load_settings(config, kafka={"bootstrap": bootstrap})
    # A refused login or an untrusted certificate ends the command with one line, instead of
    # a producer that retries until its messages time out.
    check_kafka(settings, [topic], timeout_s=settings.worker.startup_timeout_s)
    kind, rows = load_dataset(data)
    rows = rows[:limit] if limit is not None else rows
    stem = key_prefix or data.name.split(".")[0]
    names = [f"{stem}-{i % keys}" for i in range(len(rows))]
    result = replay(
        settings.kafka.client_config(), topic, rows, kind=kind, keys=names, rate=rate,
        bad_fraction=bad_fraction, frames=not json_images, seed=seed,
    )  # fmt: skip
    rate_done = result.sent / max(result.seconds, 1e-9)
    typer.echo(f"sent {result.sent} records ({len(rows)} {kind} rows, malformed: {result.bad}) "
               f"to {topic} in {result.seconds:.1f} s ({rate_done:,.0f}/s)")  # fmt: skip


@app.command("demo")
def demo(
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Use this broker, not the local stack.")
    ] = None,
    redis_url: RedisUrl = None,
    machine: Annotated[str, typer.Option("--machine", help="SMD machine.")] = "machine-2-7",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="SMD folder (train/, test/, test_label/); default: a shipped slice."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay only N test rows.")] = None,
    rate: Annotated[float, typer.Option("--rate", help="Records/s replayed (0 = max).")] = 4000.0,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (cached).")] = 10,
) -> None:
    """The whole product on real server telemetry (SMD), with live alerts.

    Trains on one machine's training half, replays its labelled test half through two
    workers, shows live progress, then alert precision/recall against the labels. Ctrl-C stops
    cleanly. A local Kafka + Redis that the demo starts is stopped again at the end.
    """
    from streamer.devtools.demo import run_demo

    result = run_demo(
        bootstrap=bootstrap, redis_url=redis_url, machine=machine, data_dir=data_dir,
        limit=limit, rate=rate or None, epochs=epochs,
    )  # fmt: skip
    s = result.score
    typer.echo(
        f"{'interrupted after' if result.interrupted else 'done in'} {result.seconds:.0f} s: "
        f"{result.scored:,} of {result.rows:,} rows scored, {result.dead_letters} dead letters"
    )
    from statistics import median

    delay = f"; median delay {median(s.delays_rows):.0f} rows" if s.delays_rows else ""
    typer.echo(
        f"alert episodes: {s.episodes} ({s.true_episodes} began inside a labelled anomaly) -> "
        f"precision {s.precision:.2f}; labelled segments found: {s.detected_segments} of "
        f"{s.segments} -> recall {s.recall:.2f}{delay}"
    )
    typer.echo("(definitions: docs/stream-eval.md)")
    typer.echo(result.services)
    if result.interrupted:
        raise typer.Exit(130)  # the shell convention for "stopped by Ctrl-C"


@app.command("bench")
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller data, one run per row (under 2 minutes).")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the results as JSON here.")
    ] = None,
    doc: Annotated[
        Path | None,
        typer.Option(
            "--doc",
            help="Doc whose generated part is replaced (default: "
            "docs/BENCHMARKS.md for a full run, none for --quick).",
        ),
    ] = None,
    bootstrap: Annotated[str, typer.Option("--bootstrap")] = "127.0.0.1:9092",
    redis_url: Annotated[str, typer.Option("--redis-url")] = "redis://127.0.0.1:6379/0",
    device: Device = None,
    peers: Annotated[
        bool,
        typer.Option(
            "--peers/--no-peers",
            help="Run the quix-river row (its own environment is made on first use).",
        ),
    ] = True,
) -> None:
    """Throughput and latency of the worker against the raw Kafka ceiling and River.

    All rows run on the same generated messages in one run; prints the table and writes it to
    DOC. Needs the benchmark extras (`pip install 'ama-stream[bench]'`).
    """
    from dataclasses import replace

    from bench.report import write_doc
    from bench.run import FULL, QUICK, run_bench

    cfg = replace(QUICK if quick else FULL, bootstrap=bootstrap, redis_url=redis_url,
                  device=device, peers=peers)  # fmt: skip
    report = run_bench(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(report.markdown())
    if doc is not None or not quick:
        write_doc(doc or Path("docs/BENCHMARKS.md"), report.markdown())
    if json_out is not None:
        json_out.write_bytes(report.to_json())
