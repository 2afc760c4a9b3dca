"""Decoder throughput: schemas.decode.decode_vectors against a naive per-record pydantic path.

Usage: python bench/decode_bench.py [--records 1024] [--dim 38] [--repeat 30]

Prints records/s for an all-valid batch and a mixed one (10% bad records of assorted kinds),
best of ``--repeat`` runs (the least disturbed by other processes on the machine). Both paths
produce the same thing: a float32 (n, dim) array of the valid records, keys, ts and rejects.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import orjson
from pydantic import ValidationError

from schemas.decode import decode_vectors
from schemas.records import SensorRecord

MAX_BYTES = 1_000_000


def valid_batch(n: int, dim: int, seed: int = 0) -> list[bytes]:
    """n SensorRecords as producers send them: orjson, numeric ts, 50 distinct keys."""
    rng = np.random.default_rng(seed)
    return [
        orjson.dumps({"key": f"sensor-{i % 50}", "ts": 1.7e9 + i, "values": row})
        for i, row in enumerate(rng.normal(size=(n, dim)).tolist())
    ]


def mixed_batch(n: int, dim: int) -> list[bytes | None]:
    """The valid batch with every 10th record replaced by a bad one, cycling through kinds."""
    good = valid_batch(n, dim)
    row = [0.5] * dim
    bad: list[bytes | None] = [
        None,
        b"\xff\xfe not utf-8",
        b'{"key": "a", "ts": 1,',
        b"[1, 2, 3]",
        orjson.dumps({"key": "a", "values": row}),
        orjson.dumps({"key": "a", "ts": 1, "values": [*row[:-1], True]}),
        orjson.dumps({"key": "a", "ts": 1, "values": row[:-1]}),
        orjson.dumps({"key": "a", "ts": 1, "values": [*row[:-1], 1e39]}),
        orjson.dumps({"key": "a", "ts": "yesterday", "values": row}),
    ]
    return [bad[(i // 10) % len(bad)] if i % 10 == 0 else v for i, v in enumerate(good)]


def naive_pydantic(raw: Sequence[bytes | None], dim: int) -> tuple[np.ndarray, list[int]]:
    """The straightforward path: one SensorRecord per message, then stack the valid ones."""
    rows: list[list[float]] = []
    rejects: list[int] = []
    for i, value in enumerate(raw):
        if not value or len(value) > MAX_BYTES:
            rejects.append(i)
            continue
        try:
            record = SensorRecord.model_validate_json(value)
        except ValidationError:
            rejects.append(i)
            continue
        if len(record.values) != dim:
            rejects.append(i)
            continue
        rows.append(record.values)
    return np.array(rows, dtype=np.float32).reshape(-1, dim), rejects


def records_per_s(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=38)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    n, dim = args.records, args.dim

    batches: dict[str, Sequence[bytes | None]] = {
        "all valid": valid_batch(n, dim),
        "mixed, 10% bad": mixed_batch(n, dim),
    }
    print(f"decode_vectors: batch of {n} records, dim {dim}, best of {args.repeat}\n")
    print(f"{'batch':<16}{'decode_vectors':>18}{'naive pydantic':>18}{'speed-up':>10}")
    for name, batch in batches.items():
        decoded = decode_vectors(batch, dim=dim, max_bytes=MAX_BYTES)
        naive_values, naive_rejects = naive_pydantic(batch, dim)
        # Same verdicts on every record, or the comparison means nothing.
        assert [r.index for r in decoded.rejects] == naive_rejects
        assert np.array_equal(decoded.values, naive_values)
        fast = partial(decode_vectors, batch, dim=dim, max_bytes=MAX_BYTES)
        slow = partial(naive_pydantic, batch, dim)
        fast_rate = records_per_s(fast, n, args.repeat)
        slow_rate = records_per_s(slow, n, args.repeat)
        ratio = fast_rate / slow_rate
        print(f"{name:<16}{fast_rate:>14,.0f} r/s{slow_rate:>14,.0f} r/s{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
