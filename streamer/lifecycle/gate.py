"""The champion / challenger gate: publish a retrained model only if it is not worse.

Pure functions of scores, so the rule is unit-tested without a broker. Each model is judged
at its own calibrated threshold (the floor a worker serves it with): the two score scales
differ, which is why thresholds and statistics are kept per model version.

Checks (every one must pass; docs/retrain.md gives the reasoning and defaults):

1. finite: the challenger scores every held-out and labelled record to a finite number.
2. false alarms: the challenger's alarm rate on the held-out traffic is at most the champion's
   plus ``margin_false_alarm``.
3. stability: the worst key's alarm rate (keys with at least ``MIN_KEY_RECORDS`` held-out
   records) is at most the champion's worst plus ``margin_key_false_alarm``, so a model that
   is better on average cannot flood one key.
4. labels: when the labelled feedback has at least ``min_labels`` records of each class, the
   challenger's AUROC on it is at least the champion's minus ``margin_auroc``, unless the drop
   is within the sampling noise of the labelled set: a drop counts only when it also exceeds
   ``AUROC_DROP_Z`` standard errors of the paired AUROC difference (DeLong et al. 1988). With a
   hundred labels a 0.03 drop is noise; with a thousand it is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from schemas.settings import RetrainSettings

__all__ = ["AUROC_DROP_Z", "MIN_KEY_RECORDS", "GateResult", "auroc", "auroc_drop_se", "judge"]

MIN_KEY_RECORDS = 50  # below this a key's alarm rate is mostly noise (1 alarm = 2 %)
AUROC_DROP_Z = 1.645  # one-sided 5 %: a smaller drop is indistinguishable from label noise


@dataclass(frozen=True)
class GateResult:
    """The decision and every number it was based on (written to the model history)."""

    decision: Literal["publish", "reject"]
    reasons: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def _midranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, each run of equal scores getting the mean of its positions."""
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (anomaly = positive), ties counted half (Mann-Whitney U)."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    return float((_midranks(scores)[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def auroc_drop_se(old: np.ndarray, new: np.ndarray, labels: np.ndarray) -> float:
    """Standard error of AUROC(old) - AUROC(new) on the same labelled records (DeLong's
    paired estimate: both models score the same records, so their errors are correlated and
    the difference is tighter than either AUROC alone)."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    v10, v01 = [], []  # per positive: share of negatives below it; per negative: of positives
    for scores in (old, new):
        ranks = _midranks(scores)
        v10.append((ranks[labels] - _midranks(scores[labels])) / neg)
        v01.append(1.0 - (ranks[~labels] - _midranks(scores[~labels])) / pos)
    var = 0.0
    for (of_old, of_new), n in ((v10, pos), (v01, neg)):
        if n > 1:
            var += float(np.var(of_old - of_new, ddof=1)) / n
    return math.sqrt(var)


def _worst_key_rate(flags: np.ndarray, keys: list[str]) -> float | None:
    by_key: dict[str, list[bool]] = {}
    for key, flag in zip(keys, flags.tolist(), strict=True):
        by_key.setdefault(key, []).append(flag)
    rates = [float(np.mean(v)) for v in by_key.values() if len(v) >= MIN_KEY_RECORDS]
    return max(rates) if rates else None


def judge(
    cfg: RetrainSettings,
    *,
    champion: tuple[np.ndarray, float],
    challenger: tuple[np.ndarray, float],
    holdout_keys: list[str],
    labelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> GateResult:
    """Decide from held-out scores and thresholds of both models.

    ``champion`` / ``challenger``: (held-out scores, calibrated threshold). ``labelled``:
    (champion scores, challenger scores, labels) of the labelled records, or None.
    """
    (old, old_t), (new, new_t) = champion, challenger
    reasons: list[str] = []
    m: dict[str, Any] = {"holdout": len(old), "threshold_champion": old_t}
    m["threshold_challenger"] = new_t
    finite = bool(np.isfinite(new).all() and np.isfinite(new_t))
    if labelled is not None:
        finite = finite and bool(np.isfinite(labelled[1]).all())
    if not finite:
        return GateResult("reject", ["challenger scores are not finite"], m)
    old_flags, new_flags = old > old_t, new > new_t
    m["false_alarm_champion"] = float(old_flags.mean()) if len(old) else 0.0
    m["false_alarm_challenger"] = float(new_flags.mean()) if len(new) else 0.0
    if m["false_alarm_challenger"] > m["false_alarm_champion"] + cfg.margin_false_alarm:
        reasons.append("false-alarm rate above the champion's plus the margin")
    m["worst_key_champion"] = _worst_key_rate(old_flags, holdout_keys)
    m["worst_key_challenger"] = _worst_key_rate(new_flags, holdout_keys)
    if (
        m["worst_key_champion"] is not None
        and m["worst_key_challenger"] is not None
        and m["worst_key_challenger"] > m["worst_key_champion"] + cfg.margin_key_false_alarm
    ):
        reasons.append("worst key's false-alarm rate above the champion's plus the margin")
    if labelled is not None:
        old_l, new_l, labels = labelled
        m["labelled_anomalous"] = int(labels.sum())
        m["labelled_normal"] = int((~labels).sum())
        if min(m["labelled_anomalous"], m["labelled_normal"]) >= cfg.min_labels:
            m["auroc_champion"] = auroc(old_l, labels)
            m["auroc_challenger"] = auroc(new_l, labels)
            m["auroc_drop_se"] = auroc_drop_se(old_l, new_l, labels)
            drop = m["auroc_champion"] - m["auroc_challenger"]
            if drop > cfg.margin_auroc and drop > AUROC_DROP_Z * m["auroc_drop_se"]:
                reasons.append(
                    "AUROC on labelled feedback below the champion's minus the margin, "
                    "beyond label noise"
                )
    return GateResult("reject" if reasons else "publish", reasons, m)
