"""``ama-stream local up / status / down``: the local Kafka (KRaft) + Redis for development."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamer.devtools.local_stack import LocalStack, default_state_dir

app = typer.Typer(no_args_is_help=True, help="A local single-node Kafka (KRaft) + Redis.")

_State = Annotated[
    Path | None, typer.Option("--state-dir", help="Where data, logs and PID files live.")
]
_KafkaPort = Annotated[int, typer.Option("--kafka-port", help="Broker port on 127.0.0.1.")]
_ControllerPort = Annotated[int, typer.Option("--controller-port", help="KRaft controller port.")]
_RedisPort = Annotated[int, typer.Option("--redis-port", help="Redis port on 127.0.0.1.")]


def _stack(state_dir: Path | None, kafka: int, controller: int, redis: int) -> LocalStack:
    return LocalStack(
        state_dir=state_dir or default_state_dir(),
        kafka_port=kafka,
        controller_port=controller,
        redis_port=redis,
    )


@app.command("up")
def up(
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


@app.command("status")
def status(
    state_dir: _State = None,
    kafka_port: _KafkaPort = 9092,
    controller_port: _ControllerPort = 9093,
    redis_port: _RedisPort = 6379,
) -> None:
    """Report whether each service is running and answering; exit 1 unless both are."""
    healthy = True
    for line in _stack(state_dir, kafka_port, controller_port, redis_port).status():
        typer.echo(line.describe())
        healthy = healthy and line.ready
    raise typer.Exit(0 if healthy else 1)


@app.command("down")
def down(
    state_dir: _State = None,
    kafka_port: _KafkaPort = 9092,
    controller_port: _ControllerPort = 9093,
    redis_port: _RedisPort = 6379,
) -> None:
    """Stop exactly the processes that `up` started (by PID file)."""
    for line in _stack(state_dir, kafka_port, controller_port, redis_port).down():
        typer.echo(line)
