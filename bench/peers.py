"""The virtualenv the peer rows run in (`quix-river`): Quix Streams pins confluent-kafka and
pydantic below what ama-stream needs, so it cannot share ama-stream's environment. Made once
under ``~/.cache/ama-stream/venv-peers`` (``AMA_PEERS_VENV``) and reused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.data import BenchError

__all__ = ["PEERS", "peer_python"]

#: What the peer environment holds (Quix Streams pinned to its release when the row was added).
PEERS = ("quixstreams==3.28.1", "river>=0.21", "orjson>=3.10")


def peer_python() -> Path:
    """The peer virtualenv's interpreter, made (a few minutes, once) if missing."""
    root = Path(os.environ.get("AMA_PEERS_VENV", Path.home() / ".cache/ama-stream/venv-peers"))
    python = root / "bin" / "python"
    stamp = root / ".ama-peers"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(PEERS):
        return python
    for argv in ([sys.executable, "-m", "venv", str(root)],
                 [str(python), "-m", "pip", "install", "-q", *PEERS]):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"making the peer environment failed: {done.stderr[-500:]}")
    stamp.write_text("\n".join(PEERS))
    return python
