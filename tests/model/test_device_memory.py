"""Scoring a batch larger than the device can take right now: the detector halves its chunk
and goes on (the out-of-memory error is raised by a stand-in, as CI has no GPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from model import AMADetector
from model.testing import synthetic_normal, train_tiny_detector
from schemas.errors import ServiceError


@pytest.fixture(scope="module")
def detector() -> AMADetector:
    return train_tiny_detector(dim=12, seed=3)


def _limit_rows(det: AMADetector, monkeypatch: pytest.MonkeyPatch, most: int) -> list[int]:
    """Make the scorer fail like CUDA does on chunks above ``most`` rows; returns the sizes it
    was called with."""
    scorer = det._require_fitted()
    forward = scorer.forward
    seen: list[int] = []

    def limited(x: torch.Tensor, *args: Any) -> Any:
        seen.append(x.shape[0])
        if x.shape[0] > most:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (stand-in)")
        return forward(x, *args)

    monkeypatch.setattr(scorer, "forward", limited)
    return seen


def test_a_batch_that_does_not_fit_is_split_not_fatal(
    detector: AMADetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = synthetic_normal(300, 12, seed=8)
    expected_scores, expected_features = detector.score_with_features(x, 3)
    seen = _limit_rows(detector, monkeypatch, most=70)
    scores, features = detector.score_with_features(x, 3)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-9)
    assert features is not None and expected_features is not None
    np.testing.assert_array_equal(features, expected_features)
    scored = [n for n in seen if n <= 70]  # the chunks that went through
    assert seen[0] == 300 and sum(scored) == 300


def test_a_single_row_that_does_not_fit_is_an_error(
    detector: AMADetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    _limit_rows(detector, monkeypatch, most=0)
    with pytest.raises(ServiceError, match="out of memory"):  # the device's, not the record's
        detector.score(synthetic_normal(5, 12, seed=9))
