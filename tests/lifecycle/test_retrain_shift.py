"""A level shift in normal behaviour: false alarms rise, a retrain cycle brings them back down,
and the new version reaches the running worker without a restart (real Kafka + Redis)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from retrain_support import SHIFT, Deployment, alarm_rate, normal, shifted, wait_for_version

from model.detector import AMADetector
from streamer.lifecycle.retrain import run_cycle

pytestmark = pytest.mark.integration


# A large shift is flagged on most of every key's window (a new operating point, kept for
# training); a moderate one on about half, so strict exclusion still has shifted rows to learn.
@pytest.mark.parametrize(
    ("regime_share", "shift"),
    [(0.5, 8.0), (1.0, SHIFT)],
    ids=["shifted-key-kept", "strict-exclusion"],
)
def test_retrain_after_a_level_shift_lowers_false_alarms_and_hot_swaps(
    make_deployment: Callable[..., Deployment],
    tiny_bundle: Path,
    regime_share: float,
    shift: float,
) -> None:
    dep = make_deployment().retrain(regime_share=regime_share)
    s = dep.settings
    champion = AMADetector.load(tiny_bundle).model_version
    with dep.worker(tiny_bundle) as worker:
        before = dep.send(normal(800, seed=5), seed=1)
        after_shift = dep.send(shifted(1600, seed=6, by=shift), seed=2)
        events = dep.score_events(expect=2400)
        fa_before, fa_shift = alarm_rate(events, before), alarm_rate(events, after_shift)
        print(f"false alarms: before shift {fa_before:.3f}, after shift {fa_shift:.3f}")
        assert fa_before < 0.03 and fa_shift > max(0.08, 5 * fa_before)

        result = run_cycle(s)
        assert result.decision == "published", result.entry
        entry = result.entry
        assert entry is not None
        new = entry["version"]
        wait_for_version(worker, new)  # hot reload between batches, same worker object

        retrained = dep.send(shifted(1600, seed=7, by=shift), seed=3)
        events = dep.score_events(expect=4000)
    fa_retrained = alarm_rate(events, retrained, version=new)
    print(f"false alarms after the retrain: {fa_retrained:.3f}; gate: {entry['metrics']}")
    assert fa_retrained < fa_shift / 4
    assert {e["model_version"] for e in events} == {champion, new}

    window = entry["window"]
    if regime_share < 1.0:  # most of every key's window flagged: a new level, trained on
        assert window["shifted_keys"] == window["keys"] and window["excluded_anomalous"] == 0
        assert window["kept_flagged"] > 0.5 * 1600
    else:  # the records the champion flagged were left out of training, not the others
        assert window["shifted_keys"] == 0 and window["kept_flagged"] == 0
        assert window["excluded_anomalous"] > 0.05 * 1600
    assert window["excluded_unscored"] == 0
    assert window["train"] + window["holdout"] + window["excluded_anomalous"] == 2400

    history = dep.history()
    assert [h["decision"] for h in history] == ["published"]
    h = history[0]
    assert h["version"] == new and h["parent"] == champion
    assert h["metrics"]["false_alarm_challenger"] < h["metrics"]["false_alarm_champion"]
    assert Path(h["path"]) == dep.store / new and (dep.store / new / "metadata.json").is_file()
    assert dep.serving() == new
