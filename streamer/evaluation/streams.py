"""The labelled public streams, found on disk rather than listed, so that held-out machines,
runs or files dropped into the same folders are replayed by the same command.

Every stream is one key. Its ``train`` rows come before its ``test`` rows in time and carry no
labels: a model is fitted on the first part of them, and the rest (the *tail*) warms the key's
thresholds before the test part is replayed, as for a key that has been served for a while.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

__all__ = ["SUITES", "Stream", "load_suite"]

SUITES = ("smd", "skab", "nab")
SMD_STEP_S = 60.0  # SMD rows are consecutive one-minute samples without timestamps
NAB_TRAIN_SHARE = 0.15  # NAB's own "probationary period": the first 15% of each file


@dataclass(frozen=True)
class Stream:
    """One key's rows in time order: unlabelled ``train`` then labelled ``test``.

    ``group`` names the rows a model is fitted on: streams of one group share their training
    rows and one model (the SKAB runs all train on the anomaly-free run).
    """

    suite: str
    name: str
    group: str
    train: np.ndarray  # float64 (n_train, d)
    test: np.ndarray  # float64 (n_test, d)
    labels: np.ndarray  # int8 (n_test,)
    train_ts: np.ndarray  # seconds, float64 (n_train,)
    test_ts: np.ndarray  # seconds, float64 (n_test,)


def load_suite(root: Path, suite: str) -> list[Stream]:
    """Every stream of ``suite`` under ``root`` (the folder holding smd/, skab/, nab/)."""
    loaders = {"smd": _smd, "skab": _skab, "nab": _nab}
    if suite not in loaders:
        raise ValueError(f"unknown stream suite {suite!r} (choose from {', '.join(SUITES)})")
    streams = list(loaders[suite](root / suite))
    if not streams:
        raise FileNotFoundError(f"no {suite} streams under {root / suite}")
    return streams


def _smd(folder: Path) -> Iterator[Stream]:
    for test_file in sorted((folder / "test").glob("*.npy")):
        name = test_file.stem
        train = np.load(folder / "train" / f"{name}.npy", allow_pickle=False).astype(np.float64)
        test = np.load(test_file, allow_pickle=False).astype(np.float64)
        labels = np.loadtxt(folder / "test_label" / f"{name}.txt", dtype=np.int8)
        ts = np.arange(len(train) + len(test), dtype=np.float64) * SMD_STEP_S
        yield Stream("smd", name, name, train, test, labels, ts[: len(train)], ts[len(train) :])


def _skab(folder: Path) -> Iterator[Stream]:
    """Each labelled run is a key; all of them train on the anomaly-free run."""
    train, train_ts, _ = _skab_csv(folder / "anomaly-free" / "anomaly-free.csv")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "anomaly-free"):
        for path in sorted(sub.glob("*.csv"), key=lambda p: (len(p.stem), p.stem)):
            test, ts, labels = _skab_csv(path)
            yield Stream(
                "skab", f"{sub.name}/{path.stem}", "anomaly-free", train, test, labels,
                train_ts, ts,
            )  # fmt: skip


def _skab_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header, body = rows[0], rows[1:]
    sensors = [i for i, c in enumerate(header) if c not in ("datetime", "anomaly", "changepoint")]
    values = np.array([[float(r[i]) for i in sensors] for r in body], np.float64)
    ts = _increasing(np.array([_seconds(r[0]) for r in body]))
    labels = (
        np.array([float(r[header.index("anomaly")]) for r in body]) > 0
        if "anomaly" in header
        else np.zeros(len(body), bool)
    )
    return values, ts, labels.astype(np.int8)


def _nab(folder: Path) -> Iterator[Stream]:
    """Each labelled file is a key; its first 15% trains its own model (univariate, so no
    model could be shared across files of different units)."""
    windows: dict[str, list[list[str]]] = json.loads(
        (folder / "labels" / "combined_windows.json").read_text()
    )
    for rel in sorted(windows):
        path = folder / "data" / rel
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            body = list(csv.reader(f))[1:]
        ts = _increasing(np.array([_seconds(r[0]) for r in body]))
        values = np.array([[float(r[1])] for r in body], np.float64)
        labels = np.zeros(len(body), np.int8)
        for start, end in windows[rel]:
            labels[(ts >= _seconds(start)) & (ts <= _seconds(end))] = 1
        cut = int(len(body) * NAB_TRAIN_SHARE)
        name = rel.removesuffix(".csv")
        yield Stream(
            "nab", name, name, values[:cut], values[cut:], labels[cut:], ts[:cut], ts[cut:]
        )


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC).timestamp()


def _increasing(ts: np.ndarray) -> np.ndarray:
    """Timestamps made strictly increasing (a few public files repeat or reorder a stamp):
    the alert state machine keys an episode by its first record's ts."""
    out = ts.astype(np.float64).copy()
    for i in range(1, len(out)):
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] + 1e-3
    return out
