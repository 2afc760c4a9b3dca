"""The `ama-stream` command line: one entry point, one sub-command per job.

Each command is a thin wrapper: it parses flags, builds `Settings`, and hands over to the module
that does the work, so the same functions serve tests and the CLI.
"""

from __future__ import annotations

from pathlib import Path

import typer

from schemas.errors import AmaStreamError
from streamer import local_stack

app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, help=__doc__
)
local_app = typer.Typer(no_args_is_help=True, help="A local single-node Kafka (KRaft) + Redis.")
app.add_typer(local_app, name="local")

# --- local stack ----------------------------------------------------------------------------

_STATE = typer.Option(None, "--state-dir", help="Where data, logs and PID files live.")
_KAFKA_PORT = typer.Option(9092, "--kafka-port", help="Broker port on 127.0.0.1.")
_CONTROLLER_PORT = typer.Option(9093, "--controller-port", help="KRaft controller port.")
_REDIS_PORT = typer.Option(6379, "--redis-port", help="Redis port on 127.0.0.1.")


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
    state_dir: Path | None = _STATE,
    kafka_port: int = _KAFKA_PORT,
    controller_port: int = _CONTROLLER_PORT,
    redis_port: int = _REDIS_PORT,
) -> None:
    """Start Kafka and Redis (idempotent) and wait until both answer."""
    stack = _stack(state_dir, kafka_port, controller_port, redis_port)
    stack.up()
    typer.echo(f"kafka bootstrap: {stack.bootstrap}")
    typer.echo(f"redis url:       {stack.redis_url}")


@local_app.command("status")
def local_status(
    state_dir: Path | None = _STATE,
    kafka_port: int = _KAFKA_PORT,
    controller_port: int = _CONTROLLER_PORT,
    redis_port: int = _REDIS_PORT,
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
    state_dir: Path | None = _STATE,
    kafka_port: int = _KAFKA_PORT,
    controller_port: int = _CONTROLLER_PORT,
    redis_port: int = _REDIS_PORT,
) -> None:
    """Stop exactly the processes that `up` started (by PID file)."""
    stack = _stack(state_dir, kafka_port, controller_port, redis_port)
    for line in stack.down():
        typer.echo(line)


# --- schemas --------------------------------------------------------------------------------

# --- model ----------------------------------------------------------------------------------

# --- worker, produce, demo ------------------------------------------------------------------


def main() -> None:
    """Console entry point: our own errors become one clear line and exit status 2."""
    try:
        app()
    except AmaStreamError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
