"""One stream evaluation run: score (cached), replay through Redis, judge, report.

Labels are read only by the judging step (streamer/evaluation/metrics.py). The alert policy is
chosen without them: among the candidate policies, the most sensitive one whose false alerts on
the training tails (normal traffic) stay within ``FALSE_ALERT_BUDGET`` per key and day
(docs/stream-eval.md). The test labels then only measure the consequences, including the whole
trade-off curve that an operator can move along with ``thresholds.quantile``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.evaluation.metrics import event_metrics, point_metrics, vus_pr
from streamer.evaluation.replay import replay
from streamer.evaluation.scoring import GroupScores, score_groups
from streamer.evaluation.streams import SUITES, Stream, load_suite
from streamer.state.alerts import AlertPolicy
from streamer.state.client import RedisClient
from streamer.state.thresholds import ThresholdPolicy

__all__ = ["DEFAULT_DETECTORS", "POLICIES", "Judged", "choose_policy", "evaluate_streams"]

DEFAULT_DETECTORS = ("AMA", "AMA-temporal", "AMA-faithful", "KNN-win", "PCA-win", "IForest", "HST")
VUS_BUFFER = 20  # rows of partial credit around a segment, at most (metrics.vus_pr)
FALSE_ALERT_BUDGET = 1.0  # false episodes per key and day the chosen policy may cost
# Candidates, from most to least sensitive: the per-key threshold quantile, then the firing rule
# (n of m records, "+xR": or one record at R times its threshold at once).
RULES = ((1, 1, 0.0), (3, 10, 0.0), (5, 10, 3.0), (5, 10, 5.0), (5, 10, 0.0))
POLICIES: dict[str, tuple[ThresholdPolicy, AlertPolicy]] = {
    f"q{q}-{n}of{m}" + (f"+x{r:g}" if r else ""): (
        ThresholdPolicy(quantile=q),
        AlertPolicy(n_anomalous=n, window_m=m, fire_ratio=r),
    )
    for q in (0.99, 0.995, 0.999)
    for n, m, r in RULES
}


@dataclass(frozen=True)
class Judged:
    """One stream under one detector and policy."""

    suite: str
    stream: str
    detector: str
    policy: str
    event: dict[str, Any]
    point: dict[str, float]
    vus_pr: float
    tail_false: int  # episodes on the training tail (normal traffic)
    tail_days: float


def _judge(
    client: RedisClient, s: Stream, g: GroupScores, policy: str, point: dict[str, Any]
) -> Judged:
    thresholds, alerts = POLICIES[policy]
    warm = (g.tail, g.tail_ts)
    test = (g.tests[s.name], s.test_ts)
    got = replay(client, key=s.name, floor=g.floor, warm=warm, test=test,
                 thresholds=thresholds, alerts=alerts)  # fmt: skip
    m = event_metrics(got.episodes, s.labels, s.test_ts)
    tail_days = (len(g.tail) * float(np.median(np.diff(g.tail_ts)))) / 86_400.0
    event = {
        "precision": m.precision, "recall": m.recall, "f1": m.f1, "episodes": m.episodes,
        "true_episodes": m.true_episodes, "segments": m.segments,
        "detected": m.detected_segments, "delays_rows": list(m.delays_rows),
        "delays_s": list(m.delays_s), "false_per_day": m.false_per_day,
    }  # fmt: skip
    return Judged(s.suite, s.name, g.detector, policy, event, point["point"], point["vus"],
                  got.warm_episodes, tail_days)  # fmt: skip


def choose_policy(judged: list[Judged], detector: str) -> str:
    """The most sensitive candidate whose false alerts on the training tails, pooled over every
    stream of every suite, stay within the budget (the least sensitive if none does)."""
    for name in POLICIES:
        rows = [j for j in judged if j.detector == detector and j.policy == name]
        days = sum(j.tail_days for j in rows)
        if days > 0 and sum(j.tail_false for j in rows) / days <= FALSE_ALERT_BUDGET:
            return name
    return list(POLICIES)[-1]


def evaluate_streams(
    data_dir: Path,
    out: Path,
    *,
    client: RedisClient,
    suites: tuple[str, ...] = SUITES,
    detectors: tuple[str, ...] = DEFAULT_DETECTORS,
    workers: int = 1,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Judged]:
    """Run the stream suites and write their section of ``out`` (+ a JSON next to it).

    Every detector is replayed under every candidate policy; each detector is then reported
    under the policy the label-free rule chooses for it, and the product's default detector
    under all of them (the trade-off curve).
    """
    from streamer.evaluation.report import write_streams

    def _log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    say = log or _log
    cache = cache_dir or Path.home() / ".cache" / "ama-stream" / "stream-eval"
    streams = [s for suite in suites for s in load_suite(data_dir, suite)]
    scores = score_groups(streams, list(detectors), cache, workers=workers, log=say)
    judged: list[Judged] = []
    for det in detectors:
        for s in streams:
            g = scores[(det, s.group)]
            sc = g.tests[s.name]
            point = {"point": point_metrics(sc, s.labels),
                     "vus": vus_pr(sc, s.labels, max_buffer=VUS_BUFFER)}  # fmt: skip
            judged += [_judge(client, s, g, name, point) for name in POLICIES]
        say(f"judged {det}")
    chosen = {det: choose_policy(judged, det) for det in detectors}
    write_streams(out, judged, scores, chosen)
    return judged
