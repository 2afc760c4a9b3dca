"""Helpers for other packages' tests: a real, tiny, trained vector bundle in a few seconds.

The API is stable: ``train_tiny_bundle(path, dim=38, seed=0) -> Path``. The bundle is a genuine
AMA bundle (same code path as ``ama-stream train``), trained briefly on synthetic data where
normal rows lie near a low-dimensional subspace, so obvious outliers (e.g. ``np.full(dim, 8.0)``)
score well above normal rows and above ``threshold``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.detector import AMADetector


def synthetic_normal(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 rows: a rank-3 signal plus small noise (the 'normal' class)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(1234).normal(size=(3, dim))  # fixed across seeds
    latent = rng.normal(size=(n, 3))
    return (latent @ basis + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)


def synthetic_outliers(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 rows far from the normal subspace (uniform in a wide box)."""
    rng = np.random.default_rng(seed + 10_000)
    return rng.uniform(-6.0, 6.0, size=(n, dim)).astype(np.float32)


def train_tiny_detector(dim: int = 38, seed: int = 0, *, rows: int = 512) -> AMADetector:
    """A small trained vector detector (narrow networks, a few epochs; ~1-3 s on one core)."""
    det = AMADetector(kind="vector", hidden=64, critic_hidden=64, feat_dim=32, critic_steps=2)
    return det.fit(synthetic_normal(rows, dim, seed), epochs=8, batch_size=64, seed=seed,
                   progress=False)  # fmt: skip


def train_tiny_bundle(path: str | Path, dim: int = 38, seed: int = 0) -> Path:
    """Train a tiny vector detector and save it as a bundle directory at ``path``."""
    det = train_tiny_detector(dim, seed)
    det.metrics = {"note": "tiny synthetic test bundle (model.testing.train_tiny_bundle)"}
    return det.save(path)
