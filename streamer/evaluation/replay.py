"""Scores through the worker's verdict path: the real ``verdicts.lua`` on a real Redis.

A stream's scores are sent in micro-batches, in time order, under one key, exactly as a worker
sends a batch's scores after the model call: the script judges each record against the key's
adaptive threshold (floored by the detector's calibrated threshold), learns from it and runs the
alert state machine. The transitions it returns become :class:`~streamer.evaluation.metrics.
Episode` s in row positions. Nothing here looks at labels.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from streamer.evaluation.metrics import Episode
from streamer.state.alerts import AlertPolicy
from streamer.state.client import RedisClient
from streamer.state.keys import KeyLayout
from streamer.state.script import VerdictScript
from streamer.state.thresholds import ThresholdPolicy

__all__ = ["Replayed", "replay"]

BATCH = 256  # records per script call, a typical micro-batch of one key
TTL_S = 3600  # an evaluation's state expires by itself; it is also deleted at the end


@dataclass(frozen=True)
class Replayed:
    """Per row of the replayed test part: the threshold and verdict; and the episodes. Episodes
    that fired during the warm-up count in ``warm_episodes`` (false alerts on normal traffic,
    when the warm-up is a training tail)."""

    thresholds: np.ndarray
    is_anomaly: np.ndarray
    episodes: list[Episode]
    warm_episodes: int


def replay(
    client: RedisClient,
    *,
    key: str,
    floor: float,
    warm: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    thresholds: ThresholdPolicy,
    alerts: AlertPolicy,
) -> Replayed:
    """Replay ``warm`` (scores, ts) then ``test`` (scores, ts) under ``key``; return what the
    test part got. ``warm`` (the training tail) lets the key's statistics settle first; an
    episode still open when the test part begins is cut there, so none is counted twice."""
    prefix = f"ama-eval:{uuid.uuid4().hex}"
    script = VerdictScript(
        client, layout=KeyLayout(prefix), thresholds=thresholds, alerts=alerts,
        ttl_s=TTL_S, reemit_replayed=False,
    )  # fmt: skip
    try:
        scores = np.concatenate([warm[0], test[0]]).astype(np.float64)
        ts = np.concatenate([warm[1], test[1]]).astype(np.float64)
        first = len(warm[0])
        out_thr = np.empty(len(scores))
        out_flag = np.empty(len(scores), bool)
        open_episode: tuple[int, int] | None = None  # (start, fired)
        episodes: list[Episode] = []
        for lo in range(0, len(scores), BATCH):
            hi = min(lo + BATCH, len(scores))
            n = hi - lo
            reply = script.apply(
                model_version="eval", floor=floor, distinct=[key],
                key_index=np.zeros(n, np.int64), scores=scores[lo:hi], ts=ts[lo:hi],
                partitions=np.zeros(n), offsets=np.arange(lo, hi, dtype=np.float64),
            )  # fmt: skip
            out_thr[lo:hi], out_flag[lo:hi] = reply.thresholds, reply.is_anomaly
            for t in reply.transitions:
                row = lo + t.record
                if t.alert.status == "firing":
                    open_episode = (int(np.searchsorted(ts, t.alert.starts_at)), row)
                elif open_episode is not None:
                    episodes.append(Episode(open_episode[0], open_episode[1], row))
                    open_episode = None
        if open_episode is not None:
            episodes.append(Episode(open_episode[0], open_episode[1], len(scores) - 1))
        shifted = [
            Episode(max(e.start, first) - first, max(e.fired, first) - first, e.end - first)
            for e in episodes
            if e.end >= first
        ]
        warm_fired = sum(e.fired < first for e in episodes)
        return Replayed(out_thr[first:], out_flag[first:], shifted, warm_fired)
    finally:
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.unlink(name)
