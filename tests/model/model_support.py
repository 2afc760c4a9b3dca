"""Detector configurations of the model contract suite and their tiny synthetic data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model import AMADetector
from model.testing import synthetic_normal, synthetic_outliers

torch.set_num_threads(1)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    shape: tuple[int, ...]
    config: dict[str, Any]
    epochs: int
    rows: int


TINY_MLP = {"hidden": 32, "critic_hidden": 32, "feat_dim": 16, "critic_steps": 2}
CASES = [
    Case("vector", "vector", (12,), {"hidden": 64, "critic_hidden": 64, "feat_dim": 32}, 6, 256),
    Case("vector-faithful-score", "vector", (7,), {**TINY_MLP, "recon_lambda": 0.0,
                                                   "two_sided": True, "recon_weight": 0.0},
         12, 256),
    Case("vector-noneg-onesided", "vector", (9,), {**TINY_MLP, "neg_sampling": False,
                                                   "two_sided": False}, 12, 256),
    Case("image-dcgan-28", "image", (1, 28, 28), {"critic_steps": 1}, 2, 48),
    Case("image-dcgan-rgb32", "image", (3, 32, 32), {"critic_steps": 1}, 1, 24),
    Case("image-resnet-28", "image", (1, 28, 28), {"arch": "resnet", "critic_steps": 1}, 1, 8),
]  # fmt: skip


def make_data(case: Case, n: int, seed: int) -> np.ndarray:
    if case.kind == "vector":
        return synthetic_normal(n, case.shape[0], seed)
    rng = np.random.default_rng(seed)
    c, h, w = case.shape
    img = np.zeros((n, c, h, w), np.float32)
    img[:, :, h // 4 : 3 * h // 4, w // 2 - 2 : w // 2 + 2] = 255.0  # a vertical bar ("1")
    img += rng.uniform(0, 20, size=img.shape).astype(np.float32)
    return (
        np.clip(img, 0, 255)[:, 0] if c == 1 and case.shape == (1, 28, 28) else np.clip(img, 0, 255)
    )


def make_outliers(case: Case, n: int) -> np.ndarray:
    if case.kind == "vector":
        return synthetic_outliers(n, case.shape[0])
    rng = np.random.default_rng(99)
    c, h, w = case.shape
    img = rng.uniform(0, 255, size=(n, c, h, w)).astype(np.float32)
    return img[:, 0] if case.shape == (1, 28, 28) else img


def fit_case(case: Case, seed: int = 0) -> AMADetector:
    det = AMADetector(kind=case.kind, **case.config)  # type: ignore[arg-type]
    return det.fit(make_data(case, case.rows, seed), epochs=case.epochs, batch_size=64,
                   seed=seed, progress=False)  # fmt: skip
