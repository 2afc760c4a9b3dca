"""The group grows from 1 to 4 workers on an 8-partition topic mid-stream and shrinks again
(one worker stopped with SIGTERM, one SIGKILLed), records arriving all along (bench/scale_out.py
runs the scenario with real CLI worker processes).

Every input offset is scored; the only duplicates are offsets the killed worker had scored but
not committed (graceful changes commit before they let go); and the alert transitions are
exactly those the scored records imply, whoever owned each partition when.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_support import THRESHOLDS, anomalous_stream, reference_transitions, score_events
from fleet_support import transitions as announced
from helpers import read_topic

from bench.scale_out import PARTITIONS, Scenario, run_scale_out
from model.detector import AMADetector

pytestmark = pytest.mark.integration

ENV = {"AMA_THRESHOLDS__POLICY": THRESHOLDS["policy"],
       "AMA_THRESHOLDS__FIXED": str(THRESHOLDS["fixed"])}  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "phase_s"),
    [
        pytest.param(400.0, 3.0, id="short"),
        pytest.param(1500.0, 15.0, id="long", marks=pytest.mark.slow),
    ],
)
def test_grow_to_four_and_shrink_scores_every_offset_with_bounded_duplicates(
    rate: float,
    phase_s: float,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topic_factory: Callable[..., str],
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    names = [topic_factory(name, partitions=PARTITIONS) for name in ("in", "scores", "alerts")]
    dlq = topic_factory("dlq")
    items = anomalous_stream(int(rate * (4 * phase_s + 120)), seed=31)
    scenario = Scenario(
        kafka_bootstrap, redis_url, redis_prefix, *names, dlq, tiny_bundle, rate=rate,
        phase_s=phase_s, max_records=128, env=ENV,
    )  # fmt: skip
    result = run_scale_out(scenario, items.__getitem__, tmp_path)
    print("\n" + result.table())

    assert result.produced < len(items)
    assert result.scored == result.produced, "an input offset was never scored"
    assert [c.members for c in result.changes] == [4, 3, 2]
    assert result.duplicates_outside_kill() == 0  # joins and the SIGTERM duplicated nothing
    assert result.duplicates <= result.killed_in_flight
    events = score_events(read_topic(kafka_bootstrap, names[1], expect=result.produced))
    want = reference_transitions(
        events, redis_url=redis_url, prefix=f"{redis_prefix}.reference",
        floor=AMADetector.load(tiny_bundle).threshold,
    )  # fmt: skip
    assert len(want) >= 4
    assert announced(read_topic(kafka_bootstrap, names[2], expect=len(want))) == want
