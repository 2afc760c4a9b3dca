"""The chaos suite's quick variant (`make chaos` runs the full one): a 3-worker group on an
8-partition topic under steady load while workers are SIGKILLed, the broker restarts, Redis
stops and the group churns; the oracle then finds nothing missing, no duplicate in
exactly-once mode, every incident alerted and Redis agreeing with the alerts topic.

Each run brings up its own broker and Redis (bench/chaos.py), about 1.5 minutes per mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.chaos import QUICK, run_chaos
from bench.chaos_oracle import table

pytestmark = pytest.mark.integration

# Every fault kind runs in at least one mode: a broker restart costs ~15 s of JVM start-up and
# Redis's outage its length, so each is left out of the mode where another test covers it
# (tests/worker/test_worker_broker.py, test_worker_redis.py).
FAULTS = {
    "at-least-once": {"kill": 1, "redis": 1, "churn": 1},
    "exactly-once": {"kill": 1, "broker": 1, "churn": 1},
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("guarantee", sorted(FAULTS))
def test_nothing_is_lost_or_doubled_under_faults(guarantee: str, tmp_path: Path) -> None:
    result = run_chaos(replace(QUICK, guarantee=guarantee, faults=FAULTS[guarantee]), tmp_path)
    print(table([result]))
    verdict = result.verdict
    assert verdict is not None
    assert verdict.records > 0 and verdict.malformed > 0 and verdict.incidents > 0
    assert verdict.missing_scores == 0 and verdict.missing_dead_letters == 0
    if guarantee == "exactly-once":
        assert verdict.duplicate_scores == 0 and verdict.duplicate_dead_letters == 0
    assert verdict.alerted == verdict.incidents
    assert verdict.redis_mismatches == 0
    assert all(f.recovered_s is not None for f in result.faults)
