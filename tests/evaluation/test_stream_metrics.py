"""The stream evaluation's metrics on hand-made sequences whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.evaluation.metrics import (
    Episode,
    event_metrics,
    point_metrics,
    segments,
    vus_pr,
)

MINUTE = 60.0


def _labels(n: int, *spans: tuple[int, int]) -> np.ndarray:
    y = np.zeros(n, np.int8)
    for first, last in spans:
        y[first : last + 1] = 1
    return y


def test_segments_are_the_maximal_runs_of_ones_including_the_edges() -> None:
    y = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1])
    assert segments(y) == [(0, 1), (4, 4), (6, 8)]
    assert segments(np.zeros(5)) == []


def test_one_true_episode_one_false_one_missed_segment() -> None:
    # Two incidents: rows 100-119 (caught, the alert fires at 104) and 300-309 (missed);
    # one false page at 200. 1,000 rows, one per minute.
    y = _labels(1000, (100, 119), (300, 309))
    ts = np.arange(1000) * MINUTE
    episodes = [Episode(start=102, fired=104, end=130), Episode(start=198, fired=200, end=221)]
    m = event_metrics(episodes, y, ts)
    assert (m.episodes, m.true_episodes, m.segments, m.detected_segments) == (2, 1, 2, 1)
    assert m.precision == 0.5 and m.recall == 0.5 and m.f1 == 0.5
    assert m.delays_rows == (4,)
    assert m.delays_s == (4 * MINUTE,)
    # one false episode over 970 normal minutes
    assert m.false_per_day == pytest.approx(1 / (970 / 1440))


def test_an_alert_already_firing_before_the_incident_does_not_catch_it() -> None:
    # A page that starts before the incident and stays on was about something else: it is
    # false, and the incident counts as missed (the on-call got no new page for it).
    y = _labels(500, (200, 260))
    episode = Episode(start=10, fired=12, end=499)
    m = event_metrics([episode], y, np.arange(500.0))
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0


def test_several_pages_inside_one_incident_are_all_true_and_the_first_sets_the_delay() -> None:
    y = _labels(100, (10, 50))
    episodes = [Episode(20, 25, 30), Episode(33, 40, 60)]
    m = event_metrics(episodes, y, np.arange(100.0) * 5)
    assert m.true_episodes == 2 and m.detected_segments == 1
    assert m.delays_rows == (15,) and m.delays_s == (75.0,)


def test_no_episode_means_perfect_precision_and_zero_recall() -> None:
    m = event_metrics([], _labels(50, (5, 9)), np.arange(50.0))
    assert m.precision == 1.0 and m.recall == 0.0 and m.f1 == 0.0
    assert m.false_per_day == 0.0


def test_point_metrics_rank_the_anomalies() -> None:
    y = _labels(10, (7, 9))
    perfect = np.arange(10, dtype=float)
    assert point_metrics(perfect, y) == {"auroc": 1.0, "auprc": 1.0}
    assert point_metrics(-perfect, y)["auroc"] == 0.0
    assert math.isnan(point_metrics(perfect, np.zeros(10))["auroc"])


def test_vus_pr_is_one_for_a_perfect_score_and_rewards_near_misses_only_with_a_buffer() -> None:
    y = _labels(200, (100, 109))
    assert vus_pr(y.astype(float), y, max_buffer=0) == pytest.approx(1.0)
    # Alarms on the 5 rows just before the segment: no credit without a buffer, some with.
    early = np.zeros(200)
    early[95:100] = 1.0
    assert vus_pr(early, y, max_buffer=0) < 0.1
    assert vus_pr(early, y, max_buffer=10) > 2 * vus_pr(early, y, max_buffer=0)


def test_vus_pr_of_a_random_score_is_near_the_anomaly_share() -> None:
    rng = np.random.default_rng(0)
    y = _labels(5000, (1000, 1099), (3000, 3099))
    got = vus_pr(rng.random(5000), y, max_buffer=0)
    assert got == pytest.approx(200 / 5000, abs=0.02)
