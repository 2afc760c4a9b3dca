"""`ama-stream produce`: dataset files replayed as records, with injected malformed ones."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import DIM, read_topic
from typer.testing import CliRunner

from schemas.decode import decode_images, decode_vectors
from streamer.cli import app
from streamer.devtools.replay import MALFORMED

pytestmark = pytest.mark.integration


def test_produce_replays_vectors_with_keys_limit_and_malformed_records(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("produce", partitions=2)
    data = np.random.default_rng(0).normal(size=(300, DIM)).astype(np.float32)
    np.save(tmp_path / "rows.npy", data)
    result = CliRunner().invoke(
        app,
        [
            "produce",
            "--data",
            str(tmp_path / "rows.npy"),
            "--topic",
            topic,
            "--bootstrap",
            kafka_bootstrap,
            "--keys",
            "3",
            "--limit",
            "200",
            "--bad-fraction",
            "0.2",
            "--seed",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    messages = read_topic(kafka_bootstrap, topic, expect=200, settle=1.0)
    batch = decode_vectors([m.value() for m in messages], dim=DIM, max_bytes=100_000)

    assert len(batch.keys) == 200 and Counter(batch.keys) == {
        "rows-0": 67,
        "rows-1": 67,
        "rows-2": 66,
    }
    order = np.argsort(batch.ts)
    assert np.allclose(batch.values[order], data[:200])  # every row once, in order
    codes = Counter(r.code for r in batch.rejects)
    assert 20 <= sum(codes.values()) <= 60 and set(codes) <= set(MALFORMED["vector"])
    assert f"sent {200 + sum(codes.values())} records" in result.output


def test_produce_replays_mnist_idx_images_as_frames(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("produce-img")
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + images.tobytes()))
    result = CliRunner().invoke(
        app, ["produce", "--data", str(path), "--topic", topic, "--bootstrap", kafka_bootstrap]
    )
    assert result.exit_code == 0, result.output
    messages = read_topic(kafka_bootstrap, topic, expect=5, settle=0.5)
    assert all(m.value()[:4] == b"AMIF" for m in messages)
    batch = decode_images([m.value() for m in messages], shape=(1, 28, 28), max_bytes=100_000)
    assert not batch.rejects and np.array_equal(batch.values[:, 0], images.astype(np.float32))
