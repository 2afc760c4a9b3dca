"""The gate rejects a challenger trained on a poisoned window; the champion keeps serving
(real Kafka + Redis). Plus the gate's rules and the window sampling as pure functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from retrain_support import DIM, Deployment, normal
from sklearn.metrics import roc_auc_score

from model.detector import AMADetector
from schemas.settings import RetrainSettings
from streamer.lifecycle.gate import MIN_KEY_RECORDS, auroc, auroc_drop_se, judge
from streamer.lifecycle.retrain import run_cycle
from streamer.lifecycle.window import sample_evenly


def _stuck_sensor(n: int) -> np.ndarray:
    """A broken-sensor pattern: one fixed reading far from normal, plus a little noise."""
    rng = np.random.default_rng(3)
    centre = rng.uniform(-4, 4, DIM)
    return (centre + 0.05 * rng.normal(size=(n, DIM))).astype(np.float32)


@pytest.mark.integration
def test_challenger_trained_on_poisoned_window_is_rejected(
    make_deployment: Callable[..., Deployment], tiny_bundle: Path
) -> None:
    # While the incident ran, the verdicts were lax (a fixed threshold nobody reaches), so the
    # scores topic calls every poisoned record normal and exclusion cannot catch them; labelled
    # feedback for part of the incident arrives later.
    dep = make_deployment(policy="fixed", fixed=1e9)
    s = dep.settings
    champion = AMADetector.load(tiny_bundle).model_version
    rows = np.concatenate([normal(2000, seed=5), _stuck_sensor(500)])
    order = np.random.default_rng(0).permutation(len(rows))
    poisoned = order >= 2000  # row i of the replay is rows[order[i]]
    with dep.worker(tiny_bundle) as worker:
        sent = dep.send(rows[order], seed=1)
        dep.send_labels(sent, np.flatnonzero(poisoned)[:150], is_anomaly=True)
        dep.send_labels(sent, np.flatnonzero(~poisoned)[:150], is_anomaly=False)
        dep.score_events(expect=2500)

        result = run_cycle(s)
        after = dep.send(normal(200, seed=9), seed=2)
        events = dep.score_events(expect=2700)
        assert worker.model_version == champion

    assert result.decision == "rejected"
    entry = result.entry
    assert entry is not None
    m = entry["metrics"]
    print(f"gate decision log: {entry}")
    assert m["auroc_challenger"] < m["auroc_champion"] - s.retrain.margin_auroc
    assert any("AUROC" in reason for reason in entry["reasons"])
    assert entry["window"]["labelled"] == 300 and entry["window"]["excluded_anomalous"] == 0
    assert dep.serving() == champion
    assert [h["decision"] for h in dep.history()] == ["rejected"]
    # nothing written beside the champion the deployment published into the store
    assert sorted(p.name for p in dep.store.iterdir()) == [champion, "serving.json"]
    latest = {round(float(t), 6) for t in after.ts}
    assert {e["model_version"] for e in events if round(e["ts"], 6) in latest} == {champion}


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 300).astype(np.float64)  # many ties
    labels = rng.random(300) < 0.3
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def _paired(n: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n labelled records of each class; the challenger sees the champion's evidence through
    extra noise, so it is a little worse and the two scores are correlated."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    old = labels * 1.2 + rng.normal(size=2 * n)
    new = old + noise * rng.normal(size=2 * n)
    return old, new, labels


def test_auroc_drop_se_matches_a_paired_bootstrap() -> None:
    old, new, labels = _paired(150, seed=0)
    rng = np.random.default_rng(1)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    drops = []
    for _ in range(2000):  # resample positives and negatives separately, both models together
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        drops.append(auroc(old[idx], labels[idx]) - auroc(new[idx], labels[idx]))
    se = auroc_drop_se(old, new, labels)
    assert se == pytest.approx(float(np.std(drops)), rel=0.12)
    assert auroc_drop_se(old, old, labels) == 0.0  # same model: no uncertainty in the difference


def test_gate_counts_an_auroc_drop_only_beyond_label_noise() -> None:
    cfg = RetrainSettings()
    quiet = (_rates(100, 0.0), 1.0)
    for n, decision in ((60, "publish"), (3000, "reject")):  # the same ~0.04 drop both times
        old, new, labels = _paired(n, seed=2, noise=0.7)
        result = judge(cfg, champion=quiet, challenger=quiet, holdout_keys=["a"] * 100,
                       labelled=(old, new, labels))  # fmt: skip
        m = result.metrics
        assert m["auroc_champion"] - m["auroc_challenger"] > cfg.margin_auroc  # above the margin
        assert result.decision == decision, m


def _rates(n: int, rate: float) -> np.ndarray:
    scores = np.zeros(n)
    scores[: int(n * rate)] = 10.0
    return scores


def test_gate_rules() -> None:
    cfg = RetrainSettings()
    keys = ["a"] * 500 + ["b"] * 500
    ok = judge(cfg, champion=(_rates(1000, 0.05), 1.0), challenger=(_rates(1000, 0.02), 1.0),
               holdout_keys=keys, labelled=None)  # fmt: skip
    assert ok.decision == "publish" and ok.reasons == []
    worse = judge(cfg, champion=(_rates(1000, 0.01), 1.0), challenger=(_rates(1000, 0.03), 1.0),
                  holdout_keys=keys, labelled=None)  # fmt: skip
    assert worse.decision == "reject" and "false-alarm" in worse.reasons[0]
    # same overall rate, but all of the challenger's alarms land on key "a"
    spread = np.r_[_rates(500, 0.04), _rates(500, 0.04)]
    flood = np.r_[_rates(500, 0.08), np.zeros(500)]
    one_key = judge(cfg, champion=(spread, 1.0), challenger=(flood, 1.0), holdout_keys=keys,
                    labelled=None)  # fmt: skip
    assert one_key.decision == "reject" and "worst key" in one_key.reasons[0]
    assert MIN_KEY_RECORDS <= 500
    nan = judge(cfg, champion=(_rates(10, 0.0), 1.0), challenger=(np.full(10, np.nan), 1.0),
                holdout_keys=["a"] * 10, labelled=None)  # fmt: skip
    assert nan.decision == "reject"
    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    good, bad = np.r_[np.ones(20), np.zeros(20)], np.r_[np.zeros(20), np.ones(20)]
    few = judge(
        cfg,
        champion=(_rates(10, 0.0), 1.0),
        challenger=(_rates(10, 0.0), 1.0),
        holdout_keys=["a"] * 10,
        labelled=(good[15:25], bad[15:25], labels[15:25]),
    )
    assert few.decision == "publish" and "auroc_champion" not in few.metrics  # < min_labels
    lab = judge(cfg, champion=(_rates(10, 0.0), 1.0), challenger=(_rates(10, 0.0), 1.0),
                holdout_keys=["a"] * 10, labelled=(good, bad, labels))  # fmt: skip
    assert lab.decision == "reject" and lab.metrics["auroc_champion"] == 1.0


def test_sample_evenly_shares_between_keys_and_spreads_in_time() -> None:
    keys = ["busy"] * 900 + ["quiet"] * 60 + ["mid"] * 240
    picked = sample_evenly(keys, 300)
    chosen = [keys[i] for i in picked]
    assert len(picked) == 300 and len(set(picked.tolist())) == 300
    assert chosen.count("quiet") == 60  # all of the small key; its unused share goes to others
    assert chosen.count("busy") == 120 and chosen.count("mid") == 120
    busy = picked[: chosen.count("busy")]
    assert busy[0] == 0 and busy[-1] == 899  # spans the whole window
    assert len(sample_evenly(keys, 5000)) == len(keys)
