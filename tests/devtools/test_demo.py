"""The demo end to end on the shipped SMD slice (two worker processes), and its scoring rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamer.devtools.demo as demo
from schemas.events import Alert, alert_fingerprint
from streamer.devtools.demo_eval import episodes
from streamer.evaluation.metrics import event_metrics, segments


def alert(key: str, status: str, start: float, end: float | None = None) -> Alert:
    return Alert(
        alert_id=alert_fingerprint(key, start),
        key=key,
        status=status,
        starts_at=start,
        ends_at=end,
        peak_score=9.0,
        threshold=3.0,
        n_anomalous=3,
        model_version="v1",
        severity="critical",
    )


def test_episodes_map_to_rows_and_count_against_labelled_segments() -> None:
    labels = np.zeros(100, dtype=np.int8)
    labels[10:15] = 1
    labels[50:52] = 1
    labels[90:95] = 1
    # Key "a" sends rows 0..99 at ts 1000 + row.
    rows_by_key = {"a": (np.arange(100), 1000.0 + np.arange(100))}
    alerts = [
        alert("a", "firing", 1012.0),
        alert("a", "resolved", 1012.0, 1030.0),  # begins inside 10..14
        alert("a", "firing", 1012.0),  # a redelivered duplicate of the first episode
        alert("a", "firing", 1070.0),
        alert("a", "resolved", 1070.0, 1080.0),  # false alarm
        alert("a", "firing", 1093.0),  # still firing at the end: runs to the last row
        alert("b", "firing", 1050.0),  # a key the replay never sent: ignored
    ]
    found = episodes(alerts, rows_by_key)
    assert [(e.start, e.fired, e.end) for e in found] == [(12, 12, 30), (70, 70, 80), (93, 93, 99)]
    score = event_metrics(found, labels, np.arange(100) * 60.0)
    assert (score.episodes, score.true_episodes, score.segments, score.detected_segments) == (
        3,
        2,
        3,
        2,
    )
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(2 / 3)
    assert score.delays_rows == (2, 3)


def test_demo_data_without_a_data_dir_is_the_shipped_slice() -> None:
    data = demo.load_demo_data("machine-2-7", None)
    assert data.train.shape == (8000, 38) and data.test.shape == (12000, 38)
    assert len(segments(data.labels)) == 11 and data.source.endswith("smd-machine-2-7.npz")


@pytest.mark.integration
def test_demo_replays_through_two_workers_and_scores_every_row(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    result = demo.run_demo(
        bootstrap=kafka_bootstrap, redis_url=redis_url, limit=3000, rate=None, cache_dir=tmp_path
    )
    assert result.rows == 3000 and result.scored == 3000 and not result.interrupted
    assert result.services == "the given Kafka and Redis were used and left as they are"
    assert result.score.segments == len(
        segments(demo.load_demo_data("machine-2-7", None).labels[:3000])
    )
