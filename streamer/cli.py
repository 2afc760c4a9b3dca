"""The `ama-stream` command line: one entry point, one sub-command per job.

Each command is a thin wrapper: it parses flags, builds `Settings`, and hands over to the module
that does the work, so the same functions serve tests and the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import AmaStreamError
from streamer import local_stack

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
local_app = typer.Typer(no_args_is_help=True, help="A local single-node Kafka (KRaft) + Redis.")
app.add_typer(local_app, name="local")

# --- local stack ----------------------------------------------------------------------------

_State = Annotated[
    Path | None, typer.Option("--state-dir", help="Where data, logs and PID files live.")
]
_KafkaPort = Annotated[int, typer.Option("--kafka-port", help="Broker port on 127.0.0.1.")]
_ControllerPort = Annotated[int, typer.Option("--controller-port", help="KRaft controller port.")]
_RedisPort = Annotated[int, typer.Option("--redis-port", help="Redis port on 127.0.0.1.")]


def _stack(
    state_dir: Path | None, kafka_port: int, controller_port: int, redis_port: int
) -> local_stack.LocalStack:
    return local_stack.LocalStack(
        state_dir=state_dir or local_stack.default_state_dir(),
        kafka_port=kafka_port,
        controller_port=controller_port,
        redis_port=redis_port,
    )


@local_app.command("up")
def local_up(
    state_dir: _State = None,
    kafka_port: _KafkaPort = 9092,
    controller_port: _ControllerPort = 9093,
    redis_port: _RedisPort = 6379,
) -> None:
    """Start Kafka and Redis (idempotent) and wait until both answer."""
    stack = _stack(state_dir, kafka_port, controller_port, redis_port)
    stack.up()
    typer.echo(f"kafka bootstrap: {stack.bootstrap}")
    typer.echo(f"redis url:       {stack.redis_url}")


@local_app.command("status")
def local_status(
    state_dir: _State = None,
    kafka_port: _KafkaPort = 9092,
    controller_port: _ControllerPort = 9093,
    redis_port: _RedisPort = 6379,
) -> None:
    """Report whether each service is running and answering; exit 1 unless both are."""
    stack = _stack(state_dir, kafka_port, controller_port, redis_port)
    healthy = True
    for line in stack.status():
        typer.echo(line.describe())
        healthy = healthy and line.ready
    raise typer.Exit(0 if healthy else 1)


@local_app.command("down")
def local_down(
    state_dir: _State = None,
    kafka_port: _KafkaPort = 9092,
    controller_port: _ControllerPort = 9093,
    redis_port: _RedisPort = 6379,
) -> None:
    """Stop exactly the processes that `up` started (by PID file)."""
    stack = _stack(state_dir, kafka_port, controller_port, redis_port)
    for line in stack.down():
        typer.echo(line)


# --- schemas --------------------------------------------------------------------------------

schemas_app = typer.Typer(no_args_is_help=True, help="The wire contracts (JSON Schema).")
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write one JSON Schema file per wire contract and the settings."""
    from schemas.export import export_schemas  # imported here: only this command needs it

    for path in export_schemas(out):
        typer.echo(f"wrote {path}")


# --- model ----------------------------------------------------------------------------------


@app.command("train")
def model_train(
    data: Annotated[
        Path, typer.Option("--data", help=".npy/.npz/.csv vectors, or MNIST idx(.gz) images.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    kind: Annotated[str, typer.Option("--kind", help="vector | image")] = "vector",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    members: Annotated[
        int,
        typer.Option(
            "--members", help="Models averaged in the score; 0 = auto (vectors 3, images 1)."
        ),
    ] = 0,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, ... (default: auto).")
    ] = None,
) -> None:
    """Train an AMA detector and write a model bundle (per-epoch losses on stderr)."""
    from model import commands

    if kind not in ("vector", "image"):
        raise typer.BadParameter("--kind must be vector or image")
    det = commands.train(
        data, out, kind=kind, epochs=epochs, batch_size=batch_size, seed=seed,  # type: ignore[arg-type]
        device=device, config={"members": members},
    )  # fmt: skip
    typer.echo(f"bundle:        {out}")
    typer.echo(f"model_version: {det.model_version}")
    typer.echo(f"threshold:     {det.threshold:.4f}")


@app.command("eval")
def model_eval(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder holding adbench/, smd/ and mnist/.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Markdown report (+ .json).")] = Path(
        "docs/RESULTS.md"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Seed 0 and a subset of every suite.")
    ] = False,
    suites: Annotated[str, typer.Option("--suites", help="Comma-separated.")] = (
        "adbench,smd,mnist"
    ),
    detectors: Annotated[
        str | None, typer.Option("--detectors", help="Only these (comma-sep).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Parallel worker processes.")] = 1,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Per-job result cache (default ~/.cache).")
    ] = None,
    no_run: Annotated[bool, typer.Option("--no-run", help="Only render cached job results.")] = (
        False
    ),
    notes: Annotated[
        Path | None, typer.Option("--notes", help="Markdown file put under the report title.")
    ] = None,
) -> None:
    """Run the quality evaluation (issue 3) and write OUT plus OUT with a .json suffix."""
    from model import commands

    commands.evaluate(
        data_dir, out, quick=quick, suites=tuple(suites.split(",")),
        detectors=tuple(detectors.split(",")) if detectors else None, workers=workers,
        cache_dir=cache_dir, run=not no_run, notes=notes.read_text() if notes else "",
    )  # fmt: skip
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}")


# --- worker, produce, demo ------------------------------------------------------------------

_Config = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (same nesting as AMA_*).")
]


@app.command("worker")
def worker(
    config: _Config = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group id.")] = None,
    input_topic: Annotated[str | None, typer.Option("--input-topic")] = None,
    scores_topic: Annotated[str | None, typer.Option("--scores-topic")] = None,
    alerts_topic: Annotated[str | None, typer.Option("--alerts-topic")] = None,
    dlq_topic: Annotated[str | None, typer.Option("--dlq-topic")] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Bundle dir (default: published).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, ... (default: auto).")
    ] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="Redis key prefix.")
    ] = None,
    max_records: Annotated[
        int | None, typer.Option("--max-records", help="Batch size bound.")
    ] = None,
    max_wait_ms: Annotated[
        int | None, typer.Option("--max-wait-ms", help="Batch time bound.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="0 = any free port.")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run one worker of the consumer group until SIGTERM/SIGINT (then drain and commit).

    Settings: flags > AMA_* environment > --config YAML > defaults.
    """
    from schemas.settings import load_settings
    from streamer.app import run_worker
    from streamer.logs import configure_logging

    configure_logging(log_level)
    settings = load_settings(
        config,
        kafka={"bootstrap": bootstrap, "group_id": group, "input_topic": input_topic,
               "scores_topic": scores_topic, "alerts_topic": alerts_topic, "dlq_topic": dlq_topic},
        redis={"url": redis_url, "key_prefix": redis_prefix},
        model={"bundle": model, "device": device},
        batch={"max_records": max_records, "max_wait_ms": max_wait_ms},
        metrics={"port": metrics_port},
    )  # fmt: skip
    run_worker(settings)


@app.command("produce")
def produce(
    data: Annotated[Path, typer.Option("--data", help=".npy/.npz/.csv vectors or MNIST idx.")],
    topic: Annotated[str, typer.Option("--topic", help="Input topic (must exist).")],
    config: _Config = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap")] = None,
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
    from streamer.replay import load_dataset, replay

    if not 0.0 <= bad_fraction < 1.0 or keys < 1:
        raise typer.BadParameter("--bad-fraction must be in [0, 1) and --keys >= 1")
    settings = load_settings(config, kafka={"bootstrap": bootstrap})
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
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    machine: Annotated[str, typer.Option("--machine", help="SMD machine.")] = "machine-2-7",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="SMD folder (train/, test/, test_label/).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay only N test rows.")] = None,
    rate: Annotated[float, typer.Option("--rate", help="Records/s replayed (0 = max).")] = 4000.0,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (cached).")] = 10,
) -> None:
    """Train on real SMD data, replay its labelled test half through two workers, show live
    progress, then alert precision/recall against the labels. Ctrl-C stops cleanly."""
    from streamer.demo import run_demo

    result = run_demo(
        bootstrap=bootstrap, redis_url=redis_url, machine=machine, data_dir=data_dir,
        limit=limit, rate=rate or None, epochs=epochs,
    )  # fmt: skip
    s = result.score
    typer.echo(
        f"{'interrupted after' if result.interrupted else 'done in'} {result.seconds:.0f} s: "
        f"{result.scored:,} of {result.rows:,} rows scored, {result.dead_letters} dead letters"
    )
    typer.echo(
        f"alert episodes: {s.episodes} ({s.true_positives} overlap a labelled anomaly) -> "
        f"precision {s.precision:.2f}; labelled segments found: {s.segments_found} of "
        f"{s.segments} -> recall {s.recall:.2f}"
    )
    typer.echo("(an episode is a true positive if it overlaps a labelled anomaly segment)")
    if result.interrupted:
        raise typer.Exit(130)  # the shell convention for "stopped by Ctrl-C"


# --- bench ----------------------------------------------------------------------------------


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
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, ... (default: auto).")
    ] = None,
) -> None:
    """Throughput and latency of the worker against the raw Kafka ceiling and River, on the
    same generated messages, in one run; prints the table and writes it to DOC."""
    from dataclasses import replace

    from bench.report import write_doc
    from bench.run import FULL, QUICK, run_bench

    cfg = replace(QUICK if quick else FULL, bootstrap=bootstrap, redis_url=redis_url,
                  device=device)  # fmt: skip
    report = run_bench(cfg, log=lambda line: typer.echo(line, err=True))
    typer.echo(report.markdown())
    if doc is not None or not quick:
        write_doc(doc or Path("docs/BENCHMARKS.md"), report.markdown())
    if json_out is not None:
        json_out.write_bytes(report.to_json())


model_app = typer.Typer(no_args_is_help=True, help="The model version the workers serve.")
app.add_typer(model_app, name="model")


@model_app.command("publish")
def model_publish(
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle directory to serve.")],
    config: _Config = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="Redis key prefix.")
    ] = None,
) -> None:
    """Validate BUNDLE and point every worker at it (they swap within seconds, no restart)."""
    from schemas.settings import load_settings
    from streamer.reload import publish_model
    from streamer.state import connect_from_settings

    settings = load_settings(config, redis={"url": redis_url, "key_prefix": redis_prefix})
    client = connect_from_settings(settings)
    version = publish_model(client, settings.redis.key_prefix, bundle)
    typer.echo(f"published {bundle} as model_version {version}")


@model_app.command("list")
def model_list(
    config: _Config = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="Redis key prefix.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON entry per line.")] = False,
) -> None:
    """The model history (retrain decisions with their numbers, rollbacks), oldest first; the
    version the workers serve now is marked with *."""
    import orjson

    from schemas.settings import load_settings
    from streamer import registry
    from streamer.state import connect_from_settings

    settings = load_settings(config, redis={"url": redis_url, "key_prefix": redis_prefix})
    client = connect_from_settings(settings)
    serving = registry.current(client, settings.redis.key_prefix)
    typer.echo(f"serving: {serving['version'] if serving else '(nothing published)'}")
    for e in registry.history(client, settings.redis.key_prefix):
        if as_json:
            typer.echo(orjson.dumps(e).decode())
            continue
        mark = "*" if serving and e.get("version") == serving["version"] else " "
        m = e.get("metrics", {})
        numbers = " ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float))
        reasons = "; ".join(e.get("reasons", []))
        typer.echo(f"{mark} {e['decision']:<9} {e.get('version') or '-':<21} "
                   f"parent={e.get('parent')} {numbers} {reasons}")  # fmt: skip


@model_app.command("rollback")
def model_rollback(
    to: Annotated[
        str | None, typer.Option("--to", help="Version to serve (default: the previous one).")
    ] = None,
    config: _Config = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="Redis key prefix.")
    ] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Model store directory.")] = None,
) -> None:
    """Point every worker back at an earlier version (they swap within seconds)."""
    from model.store import ModelStore
    from schemas.settings import load_settings
    from streamer import registry
    from streamer.state import connect_from_settings

    settings = load_settings(
        config, redis={"url": redis_url, "key_prefix": redis_prefix}, retrain={"store": store}
    )
    client, prefix = connect_from_settings(settings), settings.redis.key_prefix
    lock = registry.RetrainLock(client, prefix, settings.retrain.lock_ttl_s)
    if not lock.acquire():
        raise registry.LockLost("a retrain job holds the lock; try again when it is done")
    try:
        entry = registry.rollback(client, prefix, ModelStore(settings.retrain.store), lock, to)
    finally:
        lock.release()
    typer.echo(f"rolled back from {entry['parent']} to {entry['version']}")


def _seconds(text: str) -> float:
    """'90s', '30m', '6h', '1d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 30m, 6h, 1d") from None


@app.command("retrain")
def retrain(
    once: Annotated[bool, typer.Option("--once", help="One cycle, then exit (CronJob).")] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Run a cycle every DURATION (6h, 30m, ...).")
    ] = None,
    on_drift: Annotated[
        bool, typer.Option("--on-drift", help="With --every: start early when scores drift.")
    ] = False,
    config: _Config = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap")] = None,
    input_topic: Annotated[str | None, typer.Option("--input-topic")] = None,
    scores_topic: Annotated[str | None, typer.Option("--scores-topic")] = None,
    labels_topic: Annotated[str | None, typer.Option("--labels-topic")] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url")] = None,
    redis_prefix: Annotated[
        str | None, typer.Option("--redis-prefix", help="Redis key prefix.")
    ] = None,
    store: Annotated[Path | None, typer.Option("--store", help="Model store directory.")] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Training window (24h, 90m, ...).")
    ] = None,
    max_records: Annotated[int | None, typer.Option("--max-records")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, ... (default: auto).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Retrain from recent normal traffic, gate the challenger against the champion, publish
    it if it is not worse (docs/retrain.md). Settings as for the worker, plus `retrain.*`."""
    import logging

    import orjson

    from schemas.settings import load_settings
    from streamer import retrain as job
    from streamer.logs import configure_logging

    if once == (every is not None) or (on_drift and every is None):
        raise typer.BadParameter("give one of --once and --every (--on-drift needs --every)")
    configure_logging(log_level)
    settings = load_settings(
        config,
        kafka={"bootstrap": bootstrap, "input_topic": input_topic, "scores_topic": scores_topic},
        redis={"url": redis_url, "key_prefix": redis_prefix},
        retrain={"store": store, "labels_topic": labels_topic, "max_records": max_records,
                 "window_s": _seconds(window) if window else None, "epochs": epochs,
                 "device": device},
    )  # fmt: skip
    log = logging.getLogger("streamer.retrain")
    log.info("effective configuration", extra={"settings": settings.redacted_dict()})
    if every is None:
        result = job.run_cycle(settings)
        typer.echo(f"decision: {result.decision}")
        if result.entry is not None:
            typer.echo(orjson.dumps(result.entry).decode())
        return
    job.run_schedule(settings, every_s=_seconds(every), on_drift=on_drift)


def main() -> None:
    """Console entry point: our own errors become one clear line and exit status 2."""
    try:
        app()
    except AmaStreamError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
