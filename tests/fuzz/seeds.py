"""Seed inputs for the fuzzer: one valid record of every kind the decoders take, and near
misses, so that coverage-guided mutation starts inside each decoder rather than at its first
``if``."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import orjson

from schemas.framing import encode_frame

__all__ = ["SEEDS", "write_corpus"]

_IMAGE = np.arange(4, dtype=np.uint8).reshape(1, 2, 2)
SEEDS: list[bytes] = [
    orjson.dumps({"key": "k", "ts": 1.0, "values": [1.0, 2.0, 3.0]}),
    orjson.dumps(
        {
            "key": 'k"q',
            "ts": "2024-05-01T12:00:00Z",
            "values": [1, 2, 3],
            "attrs": {"site": "north"},
        }
    ),
    b'{"key": "k", "key": "k", "ts": 1, "values": [1, 2, 3]}',
    orjson.dumps(
        {
            "key": "cam",
            "ts": 2.0,
            "image": {
                "shape": [1, 2, 2],
                "dtype": "uint8",
                "data": base64.b64encode(_IMAGE.tobytes()).decode(),
            },
        }
    ),
    encode_frame("cam", 2.0, _IMAGE),
    encode_frame("cam", 2.0, _IMAGE.astype(np.float32)[0]),
    orjson.dumps(
        {
            "path": "/models/ama-0123456789abcdef",
            "version": "ama-0123456789abcdef",
            "kind": "vector",
            "input_shape": [3],
        }
    ),
    orjson.dumps(
        {
            "key": "k",
            "ts": 1.0,
            "score": 2.0,
            "threshold": 1.0,
            "is_anomaly": True,
            "top_features": [2, 0],
            "source": {"topic": "ama.input", "partition": 0, "offset": 7},
        }
    ),
    orjson.dumps(
        {
            "alert_id": "a" * 32,
            "key": "k",
            "status": "firing",
            "starts_at": 1.0,
            "ends_at": None,
            "peak_score": 3.0,
            "threshold": 1.0,
            "n_anomalous": 3,
            "model_version": "ama-x",
            "severity": "warning",
            "labels": {},
        }
    ),
]


def write_corpus(folder: Path) -> Path:
    """Each seed as a file, with selector bytes 0 (one value) and 1 (split on ``00 ff``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        for selector in (0, 1, 4):
            (folder / f"seed-{i}-{selector}").write_bytes(bytes([selector]) + seed)
    return folder
