"""Ensembles (docs/model.md, deviation 13): a K-member detector is exactly the mean of K single
models trained with seeds seed, seed + 1000, ... and calibrated on their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model import AMADetector
from model.testing import synthetic_normal, synthetic_outliers

TINY = {"hidden": 32, "critic_hidden": 32, "feat_dim": 16, "critic_steps": 2}


def _fit(members: int, seed: int) -> AMADetector:
    det = AMADetector(kind="vector", members=members, **TINY)
    return det.fit(synthetic_normal(256, 10, seed=3), epochs=4, batch_size=64, seed=seed,
                   progress=False)  # fmt: skip


def test_ensemble_score_is_the_mean_of_its_members() -> None:
    x = np.concatenate([synthetic_normal(20, 10, seed=9), synthetic_outliers(5, 10)])
    pair = _fit(2, seed=5)
    first, second = _fit(1, seed=5), _fit(1, seed=1005)
    assert not np.allclose(first.score(x), second.score(x))  # members really differ
    np.testing.assert_allclose(pair.score(x), (first.score(x) + second.score(x)) / 2, atol=1e-9)
    details, one = pair.score_details(x), first.score_details(x)
    np.testing.assert_allclose(
        details["recon"], (one["recon"] + second.score_details(x)["recon"]) / 2, atol=1e-9
    )
    assert [m["seed"] for m in pair.training["members"]] == [5, 1005]


def test_default_members_by_kind() -> None:
    assert _fit(0, seed=0).config.members == 3  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="members"):
        _fit(-1, seed=0)
    image = AMADetector(kind="image", critic_steps=1)
    image.fit(np.zeros((8, 28, 28), np.float32), epochs=1, batch_size=8, progress=False)
    assert image.config is not None and image.config.members == 1


def test_train_command_members_flag(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streamer.cli import app

    data = tmp_path / "rows.npy"
    np.save(data, synthetic_normal(128, 6, seed=1))
    result = CliRunner().invoke(
        app, ["train", "--data", str(data), "--out", str(tmp_path / "b"), "--epochs", "1",
              "--batch-size", "64", "--members", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded = AMADetector.load(tmp_path / "b")
    assert loaded.config is not None and loaded.config.members == 1
    assert len(loaded.calibration["mu"]) == 1
