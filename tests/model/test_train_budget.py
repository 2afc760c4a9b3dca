"""Training budgets: the default fit's iteration budget and early stopping (its cost must not
grow with the rows), and the time budget the retrain job uses (training stops after the first
epoch that ends past it, and the bundle records the epochs actually run)."""

from __future__ import annotations

import numpy as np

from model.detector import AMADetector
from model.testing import synthetic_normal
from model.train import DEFAULT_ITERATIONS, HOLDOUT_MAX_ROWS

SMALL = {"hidden": 16, "critic_hidden": 16, "feat_dim": 8, "critic_steps": 1}


def test_default_fit_stays_within_the_iteration_budget_whatever_the_rows() -> None:
    # 900 rows: too few to hold any out, so nothing stops early and the budget itself binds
    # (batch 112, 8 batches an epoch: 100 epochs, where full passes would run on).
    few = AMADetector(kind="vector", members=1, **SMALL)
    few.fit(synthetic_normal(900, 8, seed=0), seed=0, progress=False)
    run = few.training["members"][0]
    assert run["iterations"] == DEFAULT_ITERATIONS and run["holdout_rows"] == 0
    assert not run["stopped_early"]
    # 120,000 rows: one epoch alone (937 batches of 128) is more than the budget.
    many = AMADetector(kind="vector", **SMALL)
    many.fit(synthetic_normal(120_000, 8, seed=1), seed=0, progress=False)
    assert many.training["batch_size"] == 128 and many.training["rows"] == 120_000
    for run in many.training["members"]:
        assert 0 < run["iterations"] <= DEFAULT_ITERATIONS
        assert run["epochs"] == 1 and run["holdout_rows"] == HOLDOUT_MAX_ROWS


def test_early_stopping_ends_the_fit_once_held_out_rows_stop_improving() -> None:
    # White noise: nothing to learn beyond the first few hundred iterations.
    noise = np.random.default_rng(0).normal(size=(4000, 16)).astype(np.float32)
    det = AMADetector(kind="vector", members=1, **SMALL).fit(noise, seed=0, progress=False)
    run = det.training["members"][0]
    assert run["stopped_early"] and run["holdout_rows"] == 400
    assert run["iterations"] < DEFAULT_ITERATIONS
    assert run["iterations"] % 50 == 0  # it stops at a held-out check


def test_time_budget_stops_training_after_the_epoch_that_passes_it() -> None:
    data = synthetic_normal(256, 8, seed=0)
    det = AMADetector(kind="vector", **SMALL)
    det.fit(data, epochs=50, batch_size=64, seed=0, progress=False, time_budget_s=0.0)
    members = det.training["members"]
    assert len(members) == 3  # the vector default; each member gets its share of the budget
    assert det.training["epochs"] == 1
    assert all(m["epochs"] == 1 and len(m["history"]) == 1 for m in members)
    full = AMADetector(kind="vector", **SMALL)
    full.fit(data, epochs=3, batch_size=64, seed=0, progress=False)
    assert full.training["epochs"] == 3
    assert full.training["iterations"] == sum(m["iterations"] for m in full.training["members"])
    assert all(m["holdout_rows"] == 0 and not m["stopped_early"] for m in full.training["members"])
