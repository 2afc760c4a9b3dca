"""The `ama-stream` command line: one entry point, one module per command group.

Each command is a thin wrapper: it parses flags, builds `Settings`, and hands over to the module
that does the work, so the same functions serve tests and the CLI. Heavy imports (torch, the
Kafka client) happen inside the commands, so `ama-stream --help` stays fast.
"""

from __future__ import annotations

import typer

from schemas.errors import AmaStreamError
from streamer.cli import dashboard, jobs, local, model, tools, topics

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Streaming anomaly detection on Kafka with an Adversarial Mirrored Autoencoder.",
)
app.add_typer(local.app, name="local")
app.add_typer(topics.app, name="topics")
app.add_typer(jobs.app)
app.add_typer(dashboard.app)
app.add_typer(model.app)
app.add_typer(tools.app)


def main() -> None:
    """Console entry point: our own errors become one clear line and exit status 2."""
    try:
        app()
    except AmaStreamError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
