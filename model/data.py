"""Loading training data for the CLI and the evaluation: vectors (.npy/.npz/.csv), MNIST idx.

Everything loads with ``allow_pickle=False``; nothing is unpickled.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from schemas.errors import AmaStreamError


class DataError(AmaStreamError):
    """A data file cannot be read as the requested kind of input."""


def load_vectors(path: str | Path) -> np.ndarray:
    """(n, d) float32 from .npy, .npz (array ``X``, else the only array) or .csv (numeric; a
    header row is skipped when it does not parse)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = list(z.keys())
                if "X" in names:
                    arr = z["X"]
                elif len(names) == 1:
                    arr = z[names[0]]
                else:
                    raise DataError(f"{p}: .npz needs an array named X (found {names})")
        elif suffix in (".csv", ".txt"):
            arr = _load_csv(p)
        else:
            raise DataError(f"{p}: unsupported extension {suffix!r} (use .npy, .npz or .csv)")
    except (ValueError, OSError) as exc:
        raise DataError(f"{p}: cannot be read ({exc})") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{p}: expected a 2-D array of vectors, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(f"{p}: contains NaN or infinite values")
    return arr


def _load_csv(p: Path) -> np.ndarray:
    try:
        return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError:
        return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2, skiprows=1)


def load_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally .gz): images (n, H, W) uint8 or labels (n,) uint8."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix == ".gz":
        with gzip.open(p) as fh:
            raw = fh.read()
    else:
        raw = p.read_bytes()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{p}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - offset != count:
        raise DataError(f"{p}: expected {count} values after the header, got {len(raw) - offset}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def load_training_data(path: str | Path, kind: str) -> np.ndarray:
    """What ``ama-stream train`` reads: vectors, or images from IDX (or an (n,H,W) .npy)."""
    p = Path(path)
    if kind == "image":
        name = p.name.lower()
        if "idx" in name or name.endswith(".gz"):
            return load_idx(p).astype(np.float32)
        arr = np.load(p, allow_pickle=False).astype(np.float32)
        if arr.ndim not in (3, 4):
            raise DataError(f"{p}: image arrays must be (n, H, W) or (n, C, H, W)")
        return arr
    return load_vectors(p)
