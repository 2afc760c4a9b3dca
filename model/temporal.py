"""Windows of a key's recent rows: the input of the temporal AMA variant.

A sensor row alone misses what its recent past shows (a slow drift, a stuck value, a change of
rhythm). The temporal variant scores the concatenation of the last ``w`` rows of one key, oldest
first, with the ordinary vector AMA; it needs only the key's previous ``w - 1`` rows at scoring
time, never a later one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["window_rows"]


def window_rows(prefix: np.ndarray, rows: np.ndarray, w: int) -> np.ndarray:
    """(n, d) ``rows`` -> (n, w * d): row i becomes rows i-w+1 .. i of ``prefix + rows``.

    ``prefix`` holds the key's rows before ``rows`` in time (may be empty). Where fewer than
    ``w - 1`` earlier rows exist, the oldest available row stands in for the missing ones, so a
    new key's first windows look like a steady signal rather than a jump from zero.
    """
    rows = np.asarray(rows)
    if w <= 1:
        return rows
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (n, d), got shape {rows.shape}")
    history = np.asarray(prefix)[-(w - 1) :] if len(prefix) else rows[:0]
    seq = np.concatenate([history, rows])
    if len(seq) == 0:
        return np.empty((0, w * rows.shape[1]), rows.dtype)
    pad = w - 1 - len(history)
    if pad > 0:
        seq = np.concatenate([np.repeat(seq[:1], pad, axis=0), seq])
    idx = np.arange(w)[None, :] + np.arange(len(rows))[:, None]
    return seq[idx].reshape(len(rows), w * rows.shape[1])
