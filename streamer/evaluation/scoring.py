"""The expensive half of the stream evaluation: fit each detector once per training group and
score every stream of the group in time order. Results are cached per job, keyed by the data and
the code that produced them, so that replays under other alert policies cost no refit.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from model.evaluate import model_code_hash
from streamer.evaluation import detectors
from streamer.evaluation.streams import SUITES, Stream

__all__ = ["FIT_SHARE", "FLOOR_QUANTILE", "GroupScores", "score_groups"]

FIT_SHARE = 0.8  # of a group's training rows fit the model; the rest is the warm-up tail
FLOOR_QUANTILE = 0.99  # the floor: this quantile of the tail's scores (the bundle's rule)


@dataclass(frozen=True)
class GroupScores:
    """One detector fitted on one group: the tail's scores and every test stream's scores."""

    detector: str
    suite: str
    group: str
    floor: float
    tail: np.ndarray
    tail_ts: np.ndarray
    tests: dict[str, np.ndarray]
    fit_s: float
    score_s: float


def _code_hash(detector: str) -> str:
    """The code whose change must invalidate cached scores of ``detector``."""
    blob = Path(detectors.__file__).read_bytes()
    if detector.startswith("AMA"):
        blob += model_code_hash().encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _job_key(detector: str, group: list[Stream], seed: int) -> str:
    h = hashlib.sha256()
    first = group[0]
    h.update(first.train.tobytes())
    for s in group:
        h.update(s.name.encode() + s.test.tobytes())
    h.update(f"{detector}|{seed}|{FIT_SHARE}|{FLOOR_QUANTILE}|{_code_hash(detector)}".encode())
    return f"{first.suite}.{first.group.replace('/', '_')}.{detector}.{h.hexdigest()[:16]}"


def score_group(detector: str, group: list[Stream], seed: int) -> GroupScores:
    """Fit ``detector`` on the group's first training rows, score its tail, then each stream's
    test rows with the stream's own earlier rows as history (each from the fitted state, so an
    online detector's learning on one stream never reaches another)."""
    import torch

    torch.set_num_threads(1)
    train, train_ts = group[0].train, group[0].train_ts
    n_fit = max(2, int(len(train) * FIT_SHARE))
    det = detectors.make(detector)
    t0 = time.perf_counter()
    det.fit(train[:n_fit], seed)
    fit_s = time.perf_counter() - t0
    tail = copy.deepcopy(det).score(train[:n_fit], train[n_fit:])
    tests = {}
    for s in group:
        # SMD and NAB test rows follow the training rows in time; a SKAB run does not follow
        # the anomaly-free run, so its first windows have no history.
        history = train if s.group == s.name else train[:0]
        tests[s.name] = copy.deepcopy(det).score(history, s.test)
    floor = float(np.quantile(tail, FLOOR_QUANTILE)) if len(tail) else float("inf")
    return GroupScores(
        detector, group[0].suite, group[0].group, floor, tail, train_ts[n_fit:], tests, fit_s,
        time.perf_counter() - t0 - fit_s,
    )  # fmt: skip


def _save(path: Path, g: GroupScores) -> None:
    meta = {
        "detector": g.detector,
        "suite": g.suite,
        "group": g.group,
        "floor": g.floor,
        "fit_s": g.fit_s,
        "score_s": g.score_s,
        "streams": list(g.tests),
    }
    arrays: dict[str, Any] = {"tail": g.tail, "tail_ts": g.tail_ts}
    arrays |= {f"test{i}": v for i, v in enumerate(g.tests.values())}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load(path: Path) -> GroupScores:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        tests = {name: z[f"test{i}"] for i, name in enumerate(meta["streams"])}
        return GroupScores(
            meta["detector"],
            meta["suite"],
            meta["group"],
            meta["floor"],
            z["tail"],
            z["tail_ts"],
            tests,
            meta["fit_s"],
            meta["score_s"],
        )


def score_groups(
    streams: list[Stream],
    names: list[str],
    cache: Path,
    *,
    seed: int = 0,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[tuple[str, str], GroupScores]:
    """Scores for every (detector, group), from the cache where present, else computed in
    ``workers`` processes; keyed by (detector, group)."""
    cache.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Stream]] = {}
    for s in streams:
        groups.setdefault(s.group, []).append(s)
    out: dict[tuple[str, str], GroupScores] = {}
    todo = []
    for name in names:
        for group in groups.values():
            path = cache / f"{_job_key(name, group, seed)}.npz"
            if path.is_file():
                out[(name, group[0].group)] = _load(path)
            else:
                todo.append((name, group, path))
    # Suite by suite (a partial run then covers whole suites), the larger groups first.
    todo.sort(key=lambda job: (SUITES.index(job[1][0].suite), -job[1][0].train.size))
    log(f"stream scoring: {len(out)} jobs cached, {len(todo)} to run")

    def done(path: Path, g: GroupScores) -> None:
        _save(path, g)
        out[(g.detector, g.group)] = g
        log(f"scored {g.group} with {g.detector}: fit {g.fit_s:.1f}s, score {g.score_s:.1f}s")

    if workers <= 1:
        for name, group, path in todo:
            done(path, score_group(name, group, seed))
        return out
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(score_group, n, g, seed): p for n, g, p in todo}
        for fut in as_completed(futures):
            done(futures[fut], fut.result())
    return out
