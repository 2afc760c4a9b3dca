"""Replay a dataset into the input topic: `ama-stream produce`, the demo and the tests use it.

Vectors (.npy/.npz/.csv) become ``SensorRecord`` JSON, images (MNIST idx, optionally .gz)
become binary frames (``schemas/framing.py``) or ``ImageRecord`` JSON. Each record's ``ts`` is
the wall clock when it is sent, so the worker's end-to-end latency metric is meaningful; the
replay returns those times so a caller can map events back to dataset rows. Malformed records
are *inserted* (never replacing a row), so row indices and labels stay aligned.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from confluent_kafka import KafkaError, Producer

from model.data import load_idx, load_vectors
from schemas.errors import AmaStreamError
from schemas.framing import encode_frame

__all__ = ["MALFORMED", "Replay", "ReplayError", "encode_row", "load_dataset", "replay"]

Kind = Literal["vector", "image"]


class ReplayError(AmaStreamError):
    """The dataset cannot be replayed, or the broker did not take every record."""


#: Malformed values the replay injects, by the reject code the worker gives each, per kind
#: (the vector ones hold for any model dimension above 2).
_COMMON = {"not_json": b"{this is not json", "empty": b"", "not_object": b"[1, 2, 3]"}
MALFORMED: dict[Kind, dict[str, bytes]] = {
    "vector": {
        **_COMMON,
        "missing_field": b'{"key": "bad", "values": [0.0, 1.0]}',
        "wrong_type": b'{"key": "bad", "ts": true, "values": [0.0, 1.0]}',
        "wrong_dimension": b'{"key": "bad", "ts": 1.0, "values": [0.0, 1.0]}',
        "non_finite": b'{"key": "bad", "ts": 1.0, "values": [1e39, 0.0]}',
    },
    "image": {
        **_COMMON,
        "bad_frame": b"AMIF\x01\x01\x03\x00" + b"\x00" * 12,
        "bad_base64": b'{"key": "bad", "ts": 1.0, "image": {"shape": [1, 2, 2], '
        b'"dtype": "uint8", "data": "!!!!"}}',
    },
}


def load_dataset(path: Path) -> tuple[Kind, np.ndarray]:
    """Vectors (n, d) float32, or images (n, 1, H, W) uint8 from an idx file."""
    name = path.name.lower()
    if "idx" in name:
        images = load_idx(path)
        if images.ndim != 3:
            raise ReplayError(f"{path}: an idx image file is (n, H, W), this is {images.shape}")
        return "image", images[:, None]
    return "vector", load_vectors(path)


def encode_row(kind: Kind, key: str, ts: float, row: np.ndarray, *, frames: bool) -> bytes:
    """One valid record: SensorRecord JSON, or an image as a frame / ImageRecord JSON."""
    if kind == "vector":
        return orjson.dumps({"key": key, "ts": ts, "values": row.tolist()})
    if frames:
        return encode_frame(key, ts, row)
    image = {
        "shape": list(row.shape),
        "dtype": row.dtype.name,
        "data": base64.b64encode(row.tobytes()).decode(),
    }
    return orjson.dumps({"key": key, "ts": ts, "image": image})


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay sent: per dataset row its key and send time, and the injected bad ones."""

    keys: list[str]
    ts: np.ndarray  # float64 epoch seconds, per row
    bad: dict[str, int]  # injected malformed records by expected reject code
    seconds: float

    @property
    def sent(self) -> int:
        return len(self.keys) + sum(self.bad.values())


def replay(
    client: dict[str, Any],
    topic: str,
    data: np.ndarray,
    *,
    kind: Kind,
    keys: Sequence[str],
    rate: float | None = None,
    bad_fraction: float = 0.0,
    frames: bool = True,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Replay:
    """Send every row of ``data`` as ``keys[i]``'s record, paced at ``rate`` records/s (None =
    as fast as the producer goes), inserting a malformed record with probability
    ``bad_fraction`` before each row; wait for every acknowledgement.

    ``stop`` is checked between records (Ctrl-C in the demo); the rows not sent then have
    ``ts`` NaN. Records of one key are sent in row order with strictly increasing ``ts``.
    """
    if len(keys) != len(data):
        raise ReplayError("replay: one key per row")
    rng = np.random.default_rng(seed)
    malformed = MALFORMED[kind]
    codes = list(malformed)
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failed.append(err.str())

    producer = Producer(
        {"linger.ms": 10, "enable.idempotence": True, **client, "on_delivery": delivered}
    )
    ts = np.full(len(data), np.nan)
    bad = dict.fromkeys(codes, 0)
    started = time.monotonic()
    last = 0.0
    for i in range(len(data)):
        if stop():
            break
        if rate:
            ahead = started + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        if bad_fraction and rng.random() < bad_fraction:
            code = codes[int(rng.integers(len(codes)))]
            bad[code] += 1
            _send(producer, topic, b"bad", malformed[code])
        last = max(time.time(), last + 1e-6)  # strictly increasing, even within a clock tick
        ts[i] = last
        _send(
            producer,
            topic,
            keys[i].encode(),
            encode_row(kind, keys[i], last, data[i], frames=frames),
        )
        if progress is not None and i % 256 == 0:
            progress(i)
    if producer.flush(60) or failed:
        raise ReplayError(f"{len(failed)} records were not delivered: {failed[:3]}")
    return Replay(list(keys), ts, {c: n for c, n in bad.items() if n}, time.monotonic() - started)


def _send(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key)
            producer.poll(0)
            return
        except BufferError:  # local queue full: let it drain
            producer.poll(0.05)
