"""The drift signal (PSI of each key's recent scores against the serving model's calibration)
and `retrain --every ... --on-drift` starting a cycle early when it crosses the threshold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from retrain_support import Deployment, normal, shifted

from model.detector import AMADetector
from streamer.lifecycle.drift import DriftMetrics, psi
from streamer.lifecycle.retrain import run_schedule


def test_psi_is_small_for_calibrated_traffic_and_large_after_a_shift(
    tiny_bundle: Path,
) -> None:
    det = AMADetector.load(tiny_bundle)
    same = psi(det.score(normal(2000, seed=11)), det.calibration)
    moved = psi(det.score(shifted(2000, seed=11)), det.calibration)
    print(f"PSI: same distribution {same:.3f}, after the shift {moved:.3f}")
    assert same < 0.1 and moved > 0.5


@pytest.mark.integration
def test_on_drift_starts_a_cycle_early(
    make_deployment: Callable[..., Deployment], tiny_bundle: Path
) -> None:
    dep = make_deployment().retrain(drift_check_s=0.5, drift_cooldown_s=0.0)
    stop, metrics = threading.Event(), DriftMetrics()
    schedule = threading.Thread(
        target=run_schedule,
        kwargs={"every_s": 3600.0, "on_drift": True, "stop": stop, "metrics": metrics},
        args=(dep.settings,),
        daemon=True,
    )
    schedule.start()
    try:
        # the start-up cycle finds an empty window: skipped, next one due in an hour
        deadline = time.monotonic() + 60
        while not dep.history():
            assert time.monotonic() < deadline, "no start-up cycle"
            time.sleep(0.2)
        assert dep.history()[0]["decision"] == "skipped"
        with dep.worker(tiny_bundle):
            dep.shift_window()
            deadline = time.monotonic() + 60
            while len(dep.history()) < 2:
                assert time.monotonic() < deadline, "drift did not start a cycle"
                time.sleep(0.2)
    finally:
        stop.set()
        schedule.join(60)
    assert not schedule.is_alive()
    history = dep.history()
    assert [h["decision"] for h in history] == ["skipped", "published"]
    assert history[0]["trigger"] == {"reason": "schedule"}
    assert history[1]["trigger"]["reason"] == "drift"
    assert history[1]["trigger"]["psi"] >= dep.settings.retrain.drift_psi
    exported = generate_latest(metrics.registry).decode()
    assert "ama_score_psi_max" in exported
