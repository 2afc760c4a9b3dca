"""The stream evaluation's replay through the real verdicts.lua, and its no-look-ahead rule."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from model.temporal import window_rows
from streamer.evaluation import detectors
from streamer.evaluation.metrics import event_metrics
from streamer.evaluation.replay import replay
from streamer.state.alerts import AlertPolicy
from streamer.state.client import connect
from streamer.state.thresholds import ThresholdPolicy


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return connect(redis_url)


def test_a_burst_becomes_one_episode_at_the_right_rows_and_nothing_is_left_in_redis(
    client: redis.Redis,
) -> None:
    rng = np.random.default_rng(0)
    warm = rng.normal(0.0, 1.0, 600)
    test = rng.normal(0.0, 1.0, 1000) * 0.3
    test[500:520] = 50.0  # an incident: 20 rows far above anything normal
    ts = np.arange(1600, dtype=np.float64) * 60.0
    got = replay(
        client, key="machine-x", floor=3.0, warm=(warm, ts[:600]), test=(test, ts[600:]),
        thresholds=ThresholdPolicy(), alerts=AlertPolicy(n_anomalous=3, window_m=10, fire_ratio=0),
    )  # fmt: skip
    assert len(got.episodes) == 1
    (ep,) = got.episodes
    assert (ep.start, ep.fired) == (500, 502)  # the third anomalous record fires it
    assert ep.end == 520 + 20 - 1  # 20 quiet records resolve it
    assert got.is_anomaly[500:520].all() and got.is_anomaly.sum() == 20
    labels = np.zeros(1000, np.int8)
    labels[495:530] = 1
    m = event_metrics(got.episodes, labels, ts[600:])
    assert (m.precision, m.recall, m.delays_rows) == (1.0, 1.0, (7,))
    assert not list(client.scan_iter(match="ama-eval:*"))


def test_an_episode_still_firing_at_the_end_of_the_stream_ends_on_its_last_row(
    client: redis.Redis,
) -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(0.0, 0.3, 400)
    scores[390:] = 40.0
    ts = np.arange(700, dtype=np.float64)
    got = replay(
        client, key="k", floor=3.0, warm=(rng.normal(0.0, 1.0, 300), ts[:300]),
        test=(scores, ts[300:]), thresholds=ThresholdPolicy(), alerts=AlertPolicy(),
    )  # fmt: skip
    # the default rule: a record at 40 is over 3x its threshold and fires at once
    assert [(e.start, e.fired, e.end) for e in got.episodes] == [(390, 390, 399)]


@pytest.mark.parametrize("name", ["KNN-win", "PCA-win", "IForest", "HST"])
def test_no_look_ahead_shuffling_the_future_does_not_change_past_scores(name: str) -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 3))
    rows = rng.normal(size=(300, 3))
    shuffled = rows.copy()
    shuffled[150:] = rng.permutation(rows[150:])
    shuffled[200:] += 5.0
    a, b = detectors.make(name), detectors.make(name)
    a.fit(train, 0)
    b.fit(train, 0)
    sa, sb = a.score(train, rows), b.score(train, shuffled)
    np.testing.assert_allclose(sa[:150], sb[:150])
    assert not np.allclose(sa[150:], sb[150:])


def test_windows_use_only_the_past_and_pad_a_new_key_with_its_oldest_row() -> None:
    rows = np.arange(8, dtype=float).reshape(4, 2)
    w = window_rows(rows[:0], rows, 3)
    assert w[0].tolist() == [0, 1, 0, 1, 0, 1]
    assert w[3].tolist() == [2, 3, 4, 5, 6, 7]
    with_history = window_rows(np.array([[-2.0, -1.0]]), rows, 3)
    assert with_history[0].tolist() == [-2, -1, -2, -1, 0, 1]
