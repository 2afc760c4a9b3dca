"""The dashboard's per-second counters: rates over whole seconds, the chart's series."""

from __future__ import annotations

from streamer.dashboard.fleet import Rates


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_rates_average_whole_seconds_and_forget_after_an_hour() -> None:
    clock = Clock(1_000_000.0)
    rates = Rates(seconds=3600, clock=clock)
    for _ in range(10):
        rates.add(records=100, flagged=2)
        clock.t += 1.0
    rates.add(records=5000)  # the current, partial second is not counted yet
    assert rates.per_second(10) == {"records": 100.0, "flagged": 2.0, "alerts": 0.0}
    clock.t += 3600
    assert rates.per_second(10)["records"] == 0.0


def test_the_series_covers_ten_minutes_at_least_and_ends_with_the_current_step() -> None:
    clock = Clock(1_000_000.0)
    rates = Rates(seconds=3600, clock=clock)
    for _ in range(25):
        rates.add(records=10, alerts=1)
        clock.t += 1.0
    clock.t += 0.5
    series = rates.series(step_s=10)
    assert len(series["t"]) == 60 and series["t"][-1] == 1_000_020.0
    assert series["records"][-3:] == [10.0, 10.0, 50 / 5.5]  # the last step: 5.5 s so far
    assert sum(series["alerts"][:-3]) == 0.0
