"""Vector normalisation: rows far outside the training range (a run at another operating
point) must stay distinguishable; a clip at 10 training standard deviations once mapped every
such row onto the same input (docs/model.md, deviation 14)."""

from __future__ import annotations

import numpy as np

from model.detector import AMADetector


def test_rows_far_outside_the_training_range_keep_their_order() -> None:
    X = np.random.default_rng(0).normal(size=(512, 4)).astype(np.float32)
    det = AMADetector(kind="vector", hidden=16, critic_hidden=16, feat_dim=8, critic_steps=1)
    det.fit(X, epochs=2, batch_size=64, seed=0, progress=False)
    far = np.zeros((3, 4), np.float32)
    far[:, 0] = [30.0, 60.0, 120.0]  # training std is 1: all three lie far beyond 10
    scores = det.score(far)
    assert scores[0] < scores[1] < scores[2]
    assert det.calibration["threshold"] < scores[0]
