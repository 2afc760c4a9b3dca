"""The work behind ``ama-stream train`` and ``ama-stream eval`` (the CLI only parses flags)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import FORMAT_VERSION
from model.data import load_training_data
from model.detector import AMADetector
from model.networks import Kind


def train(
    data: Path,
    out: Path,
    *,
    kind: Kind = "vector",
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    config: dict[str, Any] | None = None,
) -> AMADetector:
    """Load ``data``, fit an AMADetector, save the bundle to ``out`` and return the detector."""
    X = load_training_data(data, kind)
    det = AMADetector(kind=kind, **(config or {}))
    det.fit(X, epochs=epochs, batch_size=batch_size, device=device, seed=seed, progress=progress)
    det.save(out)
    return det


def train_cached(
    X: np.ndarray, cache_dir: Path, name: str, *, epochs: int, config: dict[str, Any]
) -> Path:
    """A vector bundle trained once per (rows, epochs, config, bundle format) under
    ``cache_dir``; later calls return the cached directory. The demo and the acceptance runs
    use it so a rerun starts in seconds, and a format change retrains instead of failing."""
    key = json.dumps([epochs, config, FORMAT_VERSION], sort_keys=True).encode()
    path = cache_dir / f"{name}-{hashlib.sha256(X.tobytes() + key).hexdigest()[:12]}"
    if not (path / "metadata.json").exists():
        det = AMADetector(kind="vector", **config)
        det.fit(X, epochs=epochs, batch_size=128, seed=0, progress=False)
        det.save(path)
    return path


def evaluate(
    data_dir: Path,
    out: Path,
    *,
    quick: bool = False,
    suites: tuple[str, ...] = ("adbench", "smd", "mnist"),
    detectors: tuple[str, ...] | None = None,
    workers: int = 1,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    run: bool = True,
    notes: str = "",
) -> Path:
    """Run (or resume from the cache) the evaluation suites and write ``out`` + its JSON.

    ``run=False`` only renders the jobs already in the cache (e.g. while a long run is going).
    """
    from model.evaluate import plan, run_all
    from model.report import write_report

    def _log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    jobs = plan(quick, suites, detectors)
    cache = cache_dir or Path.home() / ".cache" / "ama-stream" / "eval-cache"
    results = run_all(jobs, data_dir, cache, workers=workers, log=log or _log, run=run)
    write_report(results, out, quick=quick, notes=notes)
    return out
