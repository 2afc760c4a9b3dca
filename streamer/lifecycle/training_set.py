"""Turn a time window of the input topic into the retrain job's data: training rows, a held-out
slice for the gate, and labelled records.

Exclusion (docs/retrain.md): a record is trained on only if the serving models' score events
on the scores topic (joined by source partition and offset) all say it was normal. Records
with no score event yet (worker lag) are left out too: nothing says they are normal. Records
named in the optional labels topic are kept apart for the gate's AUROC and never trained on.
A key whose window was flagged above ``retrain.regime_share`` is at a new operating point, not
in an incident: its flagged records are trained on, or the model could never learn the level.

The held-out slice is drawn from the window *before* exclusion (minus labelled records):
judging both models only on records the champion accepted would grade the champion on a
sample chosen to agree with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from schemas.decode import decode_images, decode_vectors
from schemas.settings import Settings
from streamer.lifecycle.window import Raw, iter_since, read_since, sample_evenly

__all__ = ["TrainingSet", "build_training_set", "labels_of", "verdicts_of"]

_READ_FACTOR = 2  # read up to 2x max_records: room for key balancing and exclusion


@dataclass(frozen=True)
class TrainingSet:
    """What one cycle trains and judges on, and how it was chosen (recorded in the history)."""

    train: np.ndarray  # (n_train, *input_shape) float32
    holdout: np.ndarray  # (n_holdout, *input_shape) float32, normal traffic of the window
    holdout_keys: list[str]
    labelled: np.ndarray  # (n_labelled, *input_shape) float32
    labels: np.ndarray  # (n_labelled,) bool, True = anomalous
    summary: dict[str, Any] = field(default_factory=dict)


def verdicts_of(
    events: Iterable[Raw], input_topic: str, wanted: dict[tuple[int, int], int]
) -> list[bool | None]:
    """For each wanted input record (``(partition, offset) -> position``), True if any score
    event flagged it, False if one scored it normal, None if none did. Streams ``events``,
    keeping nothing but the answers.

    At-least-once delivery can score a record twice (also across a model swap): one anomalous
    verdict is enough to keep it out of training.
    """
    out: list[bool | None] = [None] * len(wanted)
    for raw in events:
        try:
            event = orjson.loads(raw.value)
            source = event["source"]
            if source["topic"] != input_topic:
                continue
            at = wanted.get((int(source["partition"]), int(source["offset"])))
            if at is not None:
                out[at] = bool(out[at]) or bool(event["is_anomaly"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # not a score event: nothing to join
    return out


def labels_of(events: Iterable[Raw], records: list[tuple[str, float]]) -> list[bool | None]:
    """For each record ``(key, ts)``, its ``is_anomaly`` from ``{key, ts, is_anomaly}``
    feedback matched on the key and the ts to the microsecond (the latest label wins), None if
    unlabelled. Streams ``events``; malformed feedback is ignored."""
    wanted: dict[tuple[str, float], list[int]] = {}
    for j, (key, ts) in enumerate(records):
        wanted.setdefault((key, round(ts, 6)), []).append(j)
    out: list[bool | None] = [None] * len(records)
    for raw in events:
        try:
            label = orjson.loads(raw.value)
            for at in wanted.get((str(label["key"]), round(float(label["ts"]), 6)), []):
                out[at] = bool(label["is_anomaly"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


def build_training_set(
    settings: Settings, *, kind: str, input_shape: tuple[int, ...], now_s: float
) -> TrainingSet:
    """Read the window ending at ``now_s`` and split it (module docstring)."""
    cfg, kafka = settings.retrain, settings.kafka
    client = kafka.client_config()
    start_ms = int((now_s - cfg.window_s) * 1000)
    records = read_since(
        client, cfg.group_id, kafka.input_topic, start_ms,
        limit=_READ_FACTOR * cfg.max_records, max_bytes=int(cfg.max_window_mb * 2**20),
    )  # fmt: skip
    values = [r.value for r in records]
    limit = settings.limits.max_message_bytes
    if kind == "vector":
        batch = decode_vectors(values, dim=input_shape[0], max_bytes=limit)
    else:
        c, h, w = input_shape
        batch = decode_images(values, shape=(c, h, w), max_bytes=limit)
    del values
    chosen = sample_evenly(batch.keys, cfg.max_records)
    source = [records[int(batch.index[i])] for i in chosen]
    keys = [batch.keys[i] for i in chosen]
    # Score events are produced after their records, so starting at the window's start finds
    # every verdict on a record in the window; both joins keep only the chosen records' answers.
    verdict = verdicts_of(
        iter_since(client, cfg.group_id, kafka.scores_topic, start_ms), kafka.input_topic,
        {(r.partition, r.offset): j for j, r in enumerate(source)},
    )  # fmt: skip
    label: list[bool | None] = [None] * len(chosen)
    if cfg.labels_topic:
        label = labels_of(
            iter_since(client, cfg.group_id, cfg.labels_topic, start_ms),
            [(batch.keys[i], float(batch.ts[i])) for i in chosen],
        )
    is_labelled = np.array([x is not None for x in label], dtype=bool)
    rng = np.random.default_rng(cfg.seed)
    in_holdout = (rng.random(len(chosen)) < cfg.holdout_fraction) & ~is_labelled
    flagged = np.array([v is True for v in verdict], dtype=bool)
    unscored = np.array([v is None for v in verdict], dtype=bool)
    shifted = _shifted_keys(keys, flagged, ~unscored, cfg.regime_share)
    kept = flagged & np.array([k in shifted for k in keys], dtype=bool)
    flagged &= ~kept
    in_train = ~in_holdout & ~is_labelled & ~flagged & ~unscored
    rows = batch.values[chosen]
    summary = {
        "start": start_ms / 1000,
        "end": now_s,
        "records_read": len(records),
        "rejected": len(batch.rejects),
        "sampled": len(chosen),
        "keys": len(set(keys)),
        "excluded_anomalous": int((flagged & ~in_holdout & ~is_labelled).sum()),
        "shifted_keys": len(shifted),
        "kept_flagged": int((kept & ~in_holdout & ~is_labelled).sum()),
        "excluded_unscored": int((unscored & ~flagged & ~in_holdout & ~is_labelled).sum()),
        "labelled": int(is_labelled.sum()),
        "train": int(in_train.sum()),
        "holdout": int(in_holdout.sum()),
    }
    return TrainingSet(
        train=rows[in_train],
        holdout=rows[in_holdout],
        holdout_keys=[k for k, h in zip(keys, in_holdout, strict=True) if h],
        labelled=rows[is_labelled],
        labels=np.array([bool(x) for x in label if x is not None], dtype=bool),
        summary=summary,
    )


def _shifted_keys(
    keys: list[str], flagged: np.ndarray, scored: np.ndarray, share: float
) -> set[str]:
    """Keys whose scored records in the window were flagged above ``share``."""
    if share >= 1.0:
        return set()
    names, inverse = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    hits = np.bincount(inverse, weights=flagged, minlength=len(names))
    total = np.bincount(inverse, weights=scored, minlength=len(names))
    return {str(n) for n, h, t in zip(names, hits, total, strict=True) if t and h / t > share}
