"""The training time budget (used by the retrain job): training stops after the first epoch
that ends past it, and the bundle records the epochs actually run."""

from __future__ import annotations

from model.detector import AMADetector
from model.testing import synthetic_normal


def test_time_budget_stops_training_after_the_epoch_that_passes_it() -> None:
    data = synthetic_normal(256, 8, seed=0)
    det = AMADetector(kind="vector", hidden=16, critic_hidden=16, feat_dim=8, critic_steps=1)
    det.fit(data, epochs=50, batch_size=64, seed=0, progress=False, time_budget_s=0.0)
    members = det.training["members"]
    assert len(members) == 3  # the vector default; each member gets its share of the budget
    assert det.training["epochs"] == 1
    assert all(m["epochs"] == 1 and len(m["history"]) == 1 for m in members)
    full = AMADetector(kind="vector", hidden=16, critic_hidden=16, feat_dim=8, critic_steps=1)
    full.fit(data, epochs=3, batch_size=64, seed=0, progress=False)
    assert full.training["epochs"] == 3
    assert full.training["iterations"] == sum(m["iterations"] for m in full.training["members"])
