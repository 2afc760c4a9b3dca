"""Options that several commands share, declared once so that they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "Bootstrap",
    "Config",
    "Device",
    "LogLevel",
    "RedisPrefix",
    "RedisUrl",
    "Store",
    "seconds",
]

Config = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (same nesting as AMA_*).")
]
Bootstrap = Annotated[str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers.")]
RedisUrl = Annotated[str | None, typer.Option("--redis-url", help="redis:// or rediss:// URL.")]
RedisPrefix = Annotated[str | None, typer.Option("--redis-prefix", help="Redis key prefix.")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: auto).")]
LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")]
Store = Annotated[Path | None, typer.Option("--store", help="Model store directory.")]


def seconds(text: str) -> float:
    """'90s', '30m', '6h', '1d' or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 30m, 6h, 1d") from None
