"""A transactional call that librdkafka never returns from (confluentinc/librdkafka#5456) ends
in :class:`ProducerLost` after its timeout and grace, instead of blocking the worker for
ever; one that returns or raises in time behaves as if called directly (pure logic: the real
hang is met in the chaos suite's broker restarts)."""

from __future__ import annotations

import threading
import time

import pytest

from streamer.worker import outbox
from streamer.worker.outbox import ProducerLost


def test_a_call_that_never_returns_is_reported_stuck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "STUCK_GRACE_S", 0.2)
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(ProducerLost, match="within 0 s"):
        outbox._within(0.1, release.wait)
    assert 0.3 <= time.monotonic() - started < 2.0
    release.set()


def test_a_call_that_returns_or_raises_in_time_is_passed_through() -> None:
    seen: list[int] = []
    outbox._within(1.0, seen.append, 7)
    assert seen == [7]
    with pytest.raises(ZeroDivisionError):
        outbox._within(1.0, lambda: 1 // 0)
