"""The dashboard's per-key ring buffers: downsampling, a bounded footprint with 10,000 keys,
eviction of the least recently seen keys, the heat map's ranking and the key search."""

from __future__ import annotations

import numpy as np

from streamer.dashboard.series import BYTES_PER_SLOT, KeySeries, ScoreBatch

T0 = 1_800_000_000.0  # a bucket boundary for 10 s and 1 s buckets


def batch(keys: list[str], ts: list[float], score: list[float], threshold: float = 5.0,
          flagged: list[bool] | None = None) -> ScoreBatch:  # fmt: skip
    return ScoreBatch(
        keys=keys,
        ts=np.array(ts),
        score=np.array(score),
        threshold=np.full(len(keys), threshold),
        anomalous=np.array(flagged if flagged is not None else [s > threshold for s in score]),
    )


def test_a_bucket_keeps_the_largest_score_the_last_threshold_and_the_counts() -> None:
    s = KeySeries(history_s=60, bucket_s=10, max_keys=10)
    s.add(batch(["a"] * 4, [T0, T0 + 1, T0 + 9, T0 + 10], [1.0, 7.0, 2.0, 3.0]))
    s.add(ScoreBatch(["a"], np.array([T0 + 5]), np.array([0.5]), np.array([4.0]),
                     np.array([False])))  # fmt: skip
    p = s.points("a")
    assert p == {
        "t": [T0, T0 + 10],
        "score": [7.0, 3.0],
        "threshold": [4.0, 5.0],  # the bucket's last event, in arrival order
        "events": [4, 1],
        "flagged": [1, 0],
    }
    assert s.points("nobody") is None


def test_old_buckets_are_overwritten_and_late_events_dropped() -> None:
    s = KeySeries(history_s=60, bucket_s=10, max_keys=10)  # 6 slots
    s.add(batch(["a"] * 8, [T0 + 10 * i for i in range(8)], [float(i) for i in range(8)]))
    p = s.points("a")
    assert p is not None and p["t"] == [T0 + 10 * i for i in range(2, 8)]
    s.add(batch(["a"], [T0 + 5], [99.0]))  # older than anything its slot can hold now
    p = s.points("a")
    assert p is not None and max(v for v in p["score"] if v is not None) == 7.0


def test_memory_is_fixed_per_key_and_bounded_at_ten_thousand_keys() -> None:
    s = KeySeries(history_s=3600, bucket_s=10, max_keys=10_000)
    keys = [f"dev-{i:05d}" for i in range(10_000)]
    rng = np.random.default_rng(0)
    for minute in range(3):
        ts = T0 + minute * 60 + rng.uniform(0, 60, len(keys))
        s.add(batch(keys, ts.tolist(), rng.normal(size=len(keys)).tolist()))
    assert len(s) == 10_000
    per_key = s.slots * BYTES_PER_SLOT
    assert s.slots == 360 and per_key == 7200
    print(f"series arrays with 10,000 keys: {s.nbytes / 1e6:.1f} MB")
    assert s.stamp.shape == (10_000, 360)
    assert s.nbytes == 10_000 * (per_key + 13)  # + newest bucket, last seen, live flag per key
    before = s.nbytes
    s.add(batch(keys, [T0 + 600] * len(keys), [0.0] * len(keys)))  # more events, same keys
    assert s.nbytes == before


def test_past_max_keys_the_least_recently_seen_keys_make_room() -> None:
    clock = iter(range(1000))
    s = KeySeries(history_s=60, bucket_s=10, max_keys=3, clock=lambda: float(next(clock)))
    s.add(batch(["a", "b", "c"], [T0] * 3, [1.0] * 3))
    s.add(batch(["a"], [T0 + 1], [1.0]))  # a is fresh again; b is now the stalest
    s.add(batch(["d", "e"], [T0 + 2] * 2, [1.0] * 2))
    assert sorted(k for k in ("a", "b", "c", "d", "e") if k in s) == ["a", "d", "e"]
    p = s.points("d")
    assert p is not None and p["events"] == [1]  # a reused row starts empty
    assert s.stamp.shape[0] == 3


def test_the_heat_map_ranks_keys_by_flagged_records_then_by_margin() -> None:
    s = KeySeries(history_s=600, bucket_s=10, max_keys=100)
    s.add(batch(["quiet"] * 3, [T0, T0 + 100, T0 + 590], [1.0, 1.0, 1.0]))
    s.add(batch(["hot"] * 4, [T0 + 300, T0 + 301, T0 + 302, T0 + 590], [9.0, 8.0, 9.5, 1.0]))
    s.add(batch(["warm"] * 2, [T0 + 100, T0 + 590], [6.0, 4.9]))
    s.add(batch(["near"], [T0 + 590], [4.9]))
    h = s.heatmap(rows=3, columns=60)
    assert h["keys"] == ["hot", "warm", "near"]
    assert h["totals"] == [3, 1, 0]
    assert h["start"] == T0 and h["column_s"] == 10.0
    assert h["flagged"][0][30] == 3 and sum(h["flagged"][0]) == 3
    assert h["peak"][0][30] == 9.5 and h["peak"][0][0] is None


def test_search_finds_one_key_among_ten_thousand() -> None:
    s = KeySeries(history_s=60, bucket_s=10, max_keys=20_000)
    keys = [f"site-{i % 7}/pump-{i:05d}" for i in range(10_000)]
    s.add(batch(keys, [T0] * len(keys), [0.0] * len(keys)))
    assert s.search("pump-04242") == ["site-0/pump-04242"]
    assert s.search("SITE-3/PUMP-0000") == ["site-3/pump-00003"]
    assert s.search("site-2/", limit=5) == sorted(k for k in keys if k.startswith("site-2/"))[:5]
    assert s.search("  ") == []
    prefix_first = KeySeries(history_s=60, bucket_s=10, max_keys=10)
    prefix_first.add(batch(["xab", "ab", "abc"], [T0] * 3, [0.0] * 3))
    assert prefix_first.search("ab") == ["ab", "abc", "xab"]
