"""Model commands: ``train``, ``eval``, and ``model publish / list / rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamer.cli.options import Config, Device, RedisPrefix, RedisUrl, Store

app = typer.Typer()
model_app = typer.Typer(no_args_is_help=True, help="The model version the workers serve.")
app.add_typer(model_app, name="model")

_Force = Annotated[
    bool,
    typer.Option(
        "--force", help="Publish even if the bundle takes other records than the group serves."
    ),
]


@app.command("train")
def train(
    data: Annotated[
        Path, typer.Option("--data", help=".npy/.npz/.csv vectors, or MNIST idx(.gz) images.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write.")],
    kind: Annotated[str, typer.Option("--kind", help="vector | image")] = "vector",
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            min=1,
            help="Full passes over the data; default: the training budget (at most 800 "
            "iterations per member, early stopping; docs/model.md).",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=2, help="Rows per batch; default 128 (fewer if small)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    members: Annotated[
        int,
        typer.Option(
            "--members", help="Models averaged in the score; 0 = auto (vectors 3, images 1)."
        ),
    ] = 0,
    device: Device = None,
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
def evaluate(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder holding adbench/, mnist/, smd/, skab/, nab/.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Markdown report (+ .json).")] = Path(
        "docs/RESULTS.md"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Seed 0 and a subset of every tabular suite.")
    ] = False,
    suites: Annotated[
        str,
        typer.Option(
            "--suites",
            "--suite",
            help="Comma-separated: adbench, smd, mnist (tabular); streams (SMD, SKAB and NAB "
            "replayed through the alert path) or one of streams-smd, streams-skab, streams-nab.",
        ),
    ] = "adbench,smd,mnist",
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
    config: Config = None,
    redis_url: RedisUrl = None,
) -> None:
    """Measure detection quality on public data sets against baselines; write OUT (+ .json).

    The stream suites replay through the real alert state machine, so they need a Redis
    (`ama-stream local up` starts one). Needs the evaluation extras
    (`pip install 'ama-stream[eval]'`).
    """
    from model import commands

    chosen = [s for s in suites.split(",") if s]
    streams = [s for s in chosen if s.startswith("streams")]
    tabular = tuple(s for s in chosen if not s.startswith("streams"))
    names = tuple(detectors.split(",")) if detectors else None
    if tabular:
        commands.evaluate(
            data_dir, out, quick=quick, suites=tabular, detectors=names, workers=workers,
            cache_dir=cache_dir, run=not no_run, notes=notes.read_text() if notes else "",
        )  # fmt: skip
    if streams:
        from schemas.settings import load_settings
        from streamer.evaluation.run import DEFAULT_DETECTORS, evaluate_streams
        from streamer.evaluation.streams import SUITES
        from streamer.state.client import connect_from_settings

        picked = SUITES if "streams" in streams else tuple(s.split("-", 1)[1] for s in streams)
        settings = load_settings(config, redis={"url": redis_url})
        evaluate_streams(
            data_dir, out, client=connect_from_settings(settings), suites=picked,
            detectors=names or DEFAULT_DETECTORS, workers=workers, cache_dir=cache_dir,
        )  # fmt: skip
    written = [out, *([out.with_suffix(".json")] if tabular else [])]
    written += [out.with_name(out.stem + "-streams.json")] if streams else []
    typer.echo("wrote " + ", ".join(str(p) for p in written))


@model_app.command("publish")
def publish(
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle directory to serve.")],
    force: _Force = False,
    config: Config = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    store: Store = None,
) -> None:
    """Point every worker at BUNDLE (they swap within seconds, no restart).

    The bundle is checked against what the group serves first (kind, input shape, finite
    scores). Recorded in `model list`; `model rollback` undoes it.
    """
    from model.store import ModelStore
    from schemas.settings import load_settings
    from streamer.lifecycle import registry
    from streamer.state.client import connect_from_settings

    settings = load_settings(
        config, redis={"url": redis_url, "key_prefix": redis_prefix}, retrain={"store": store}
    )
    client, model_store = connect_from_settings(settings), ModelStore(settings.retrain.store)
    entry = registry.publish_manual(
        client, settings.redis.key_prefix, bundle, force=force, store=model_store,
        signing_key=settings.model.signing_key_bytes(),
    )  # fmt: skip
    typer.echo(f"published {bundle} as model_version {entry['version']}")


@model_app.command("sign")
def sign(
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle directory to sign.")],
    config: Config = None,
) -> None:
    """Sign BUNDLE with `model.signing_key` (AMA_MODEL__SIGNING_KEY), so that workers with
    that key load it. The bundle is verified first."""
    from model.bundle import sign_bundle
    from schemas.errors import ConfigError
    from schemas.settings import load_settings

    key = load_settings(config).model.signing_key_bytes()
    if key is None:
        raise ConfigError("model sign needs model.signing_key (AMA_MODEL__SIGNING_KEY)")
    sign_bundle(bundle, key)
    typer.echo(f"signed {bundle}")


@model_app.command("list")
def listing(
    config: Config = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Only JSON: one history entry per line.")
    ] = False,
) -> None:
    """The model history, oldest first; the serving version is marked with *.

    Publishes, rollbacks and retrain decisions with their numbers; with --json, one entry per
    line with `"serving": true` on the one in force.
    """
    import orjson

    from schemas.settings import load_settings
    from streamer.lifecycle import registry
    from streamer.state.client import connect_from_settings

    settings = load_settings(config, redis={"url": redis_url, "key_prefix": redis_prefix})
    client = connect_from_settings(settings)
    pointer = registry.current(client, settings.redis.key_prefix)
    entries = registry.history(client, settings.redis.key_prefix)
    # The latest entry that put the serving version in place is the one marked.
    serving_at = max(
        (i for i, e in enumerate(entries)
         if pointer and e.get("version") == pointer.version and "path" in e),
        default=None,
    )  # fmt: skip
    if not as_json:
        typer.echo(f"serving: {pointer.version if pointer else '(nothing published)'}")
    for i, e in enumerate(entries):
        if as_json:
            typer.echo(orjson.dumps({**e, "serving": i == serving_at}).decode())
            continue
        mark = "*" if i == serving_at else " "
        m = e.get("metrics", {})
        numbers = " ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, float))
        reasons = "; ".join(e.get("reasons", []))
        by = e.get("trigger", {}).get("reason", "")
        typer.echo(f"{mark} {e['decision']:<10} {e.get('version') or '-':<21} "
                   f"parent={e.get('parent')} {by} {numbers} {reasons}".rstrip())  # fmt: skip


@model_app.command("rollback")
def rollback(
    to: Annotated[
        str | None, typer.Option("--to", help="Version to serve (default: the previous one).")
    ] = None,
    force: _Force = False,
    config: Config = None,
    redis_url: RedisUrl = None,
    redis_prefix: RedisPrefix = None,
    store: Store = None,
) -> None:
    """Point every worker back at an earlier version (they swap within seconds)."""
    from model.store import ModelStore
    from schemas.settings import load_settings
    from streamer.lifecycle import registry
    from streamer.state.client import connect_from_settings

    settings = load_settings(
        config, redis={"url": redis_url, "key_prefix": redis_prefix}, retrain={"store": store}
    )
    client, prefix = connect_from_settings(settings), settings.redis.key_prefix
    entry = registry.rollback(
        client, prefix, ModelStore(settings.retrain.store), to, force=force,
        signing_key=settings.model.signing_key_bytes(),
    )  # fmt: skip
    typer.echo(f"rolled back from {entry['parent']} to {entry['version']}")
