"""The dashboard's alert book: firing/resolved episodes de-duplicated like at-least-once
deliveries demand, bounded, and the features that drove each episode."""

from __future__ import annotations

from typing import Any

from streamer.dashboard.alerts import ANOMALIES_KEPT, AlertBook, parse_alert


def alert(key: str, status: str, start: float, n: int = 3, end: float | None = None) -> dict:
    doc: dict[str, Any] = {
        "alert_id": f"{key}-{start}".ljust(32, "0")[:32], "key": key, "status": status,
        "starts_at": start, "ends_at": end, "peak_score": 9.0, "threshold": 4.0,
        "n_anomalous": n, "model_version": "ama-x", "severity": "critical", "labels": {},
    }  # fmt: skip
    parsed = parse_alert(doc)
    assert parsed is not None
    return parsed


def test_firing_then_resolved_moves_the_episode_and_replays_change_nothing() -> None:
    book = AlertBook(resolved_kept=10, max_keys=100, clock=lambda: 200.0)
    assert book.add_alert(alert("a", "firing", 100.0))
    assert not book.add_alert(alert("a", "firing", 100.0))  # a redelivered copy
    assert book.add_alert(alert("a", "firing", 100.0, n=5))  # an update of the same episode
    assert book.firing_count == 1
    view = book.view()
    assert view["firing"][0]["n_anomalous"] == 5 and view["firing"][0]["duration_s"] == 100.0
    assert book.add_alert(alert("a", "resolved", 100.0, n=5, end=150.0))
    assert not book.add_alert(alert("a", "resolved", 100.0, n=5, end=150.0))
    assert not book.add_alert(alert("a", "firing", 100.0, n=6))  # late re-announcement
    view = book.view()
    assert view["firing"] == [] and [r["duration_s"] for r in view["resolved"]] == [50.0]


def test_resolved_episodes_are_bounded_newest_first() -> None:
    book = AlertBook(resolved_kept=3, max_keys=100)
    for i in range(5):
        book.add_alert(alert(f"k{i}", "resolved", float(i), end=float(i) + 1))
    assert [r["key"] for r in book.view()["resolved"]] == ["k4", "k3", "k2"]


def test_top_features_come_from_the_flagged_events_of_the_episode() -> None:
    book = AlertBook(resolved_kept=3, max_keys=100, clock=lambda: 500.0)
    book.add_flagged([("a", 90.0, 9.0, (7, 1, 2))])  # before the episode: not counted
    book.add_flagged([("a", 100.0 + i, 9.0, (3, 1 if i % 2 else 4, 2)) for i in range(5)])
    book.add_flagged([("b", 101.0, 9.0, (5, 6, 7))])
    book.add_alert(alert("a", "firing", 100.0))
    firing = book.view()["firing"][0]
    assert firing["features"] == [
        {"feature": 3, "count": 5},
        {"feature": 2, "count": 5},
        {"feature": 4, "count": 3},
    ]
    for i in range(2 * ANOMALIES_KEPT):
        book.add_flagged([("a", 200.0 + i, 9.0, (8,))])
    assert book.features("a", 0.0, None) == [{"feature": 8, "count": ANOMALIES_KEPT}]


def test_messages_that_are_not_alerts_are_refused() -> None:
    assert parse_alert({"key": "a"}) is None
    assert parse_alert([1, 2]) is None
    bad = dict(alert("a", "firing", 1.0), status="pending")
    assert parse_alert(bad) is None
