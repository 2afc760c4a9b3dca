"""The drift signal (PSI of each key's recent scores against the serving model's calibration)
and `retrain --every ... --on-drift` starting a cycle early when it crosses the threshold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from retrain_support import (
    Deployment,
    normal,
    running_worker,
    score_events,
    send,
    shifted,
    with_retrain,
)

from model.detector import AMADetector
from streamer import registry
from streamer.drift import DriftMetrics, psi
from streamer.retrain import run_schedule
from streamer.state import connect


def test_psi_is_small_for_calibrated_traffic_and_large_after_a_shift(
    champion_bundle: Path,
) -> None:
    det = AMADetector.load(champion_bundle)
    same = psi(det.score(normal(2000, seed=11)), det.calibration)
    moved = psi(det.score(shifted(2000, seed=11)), det.calibration)
    print(f"PSI: same distribution {same:.3f}, after the shift {moved:.3f}")
    assert same < 0.1 and moved > 0.5


@pytest.mark.integration
def test_on_drift_starts_a_cycle_early(
    make_deployment: Callable[..., Deployment], champion_bundle: Path
) -> None:
    dep = make_deployment()
    s = dep.settings
    s = with_retrain(s, drift_check_s=0.5, drift_cooldown_s=0.0)
    client, prefix = connect(s.redis.url), s.redis.key_prefix
    stop, metrics = threading.Event(), DriftMetrics()
    schedule = threading.Thread(
        target=run_schedule,
        kwargs={"every_s": 3600.0, "on_drift": True, "stop": stop, "metrics": metrics},
        args=(s,),
        daemon=True,
    )
    schedule.start()
    try:
        # the start-up cycle finds an empty window: skipped, next one due in an hour
        deadline = time.monotonic() + 60
        while not registry.history(client, prefix):
            assert time.monotonic() < deadline, "no start-up cycle"
            time.sleep(0.2)
        assert registry.history(client, prefix)[0]["decision"] == "skipped"
        with running_worker(s, champion_bundle):
            send(s, normal(400, seed=5), seed=1)
            send(s, shifted(1200, seed=6), seed=2)
            score_events(s, expect=1600)
            deadline = time.monotonic() + 60
            while len(registry.history(client, prefix)) < 2:
                assert time.monotonic() < deadline, "drift did not start a cycle"
                time.sleep(0.2)
    finally:
        stop.set()
        schedule.join(60)
    assert not schedule.is_alive()
    history = registry.history(client, prefix)
    assert [h["decision"] for h in history] == ["skipped", "published"]
    assert history[0]["trigger"] == {"reason": "schedule"}
    assert history[1]["trigger"]["reason"] == "drift"
    assert history[1]["trigger"]["psi"] >= s.retrain.drift_psi
    exported = generate_latest(metrics.registry).decode()
    assert "ama_score_psi_max" in exported
