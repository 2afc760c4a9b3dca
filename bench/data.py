"""The benchmark's inputs: messages written once per run, and briefly trained models.

Every row reads the same bytes: 38-dim SensorRecord JSON (SMD rows when the shared data set is
present, else synthetic rows of the same shape) and 28x28 uint8 images in the binary frame.
Models are full-size (the default AMA widths): throughput depends on the network's size, not on
how well it was trained, so one short epoch is enough.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from model.detector import AMADetector
from model.testing import synthetic_normal
from schemas.errors import AmaStreamError
from schemas.framing import encode_frame

__all__ = ["DIM", "IMAGE_SHAPE", "KEYS", "BenchError", "create_topics", "image_messages",
           "train_bundles", "vector_messages", "vector_rows", "write_topic"]  # fmt: skip

DIM = 38
IMAGE_SHAPE = (1, 28, 28)
KEYS = 16  # distinct record keys: thresholds are per key, so this sets Redis' per-batch work
SMD_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "smd" / "test"


class BenchError(AmaStreamError):
    """The benchmark could not run (broker or Redis missing, a run that never progressed)."""


def vector_rows(n: int) -> np.ndarray:
    """``n`` (n, 38) float32 rows: SMD machine-1-6 test rows (tiled) if present, else
    synthetic rows of the same dimension."""
    path = SMD_TEST / "machine-1-6.npy"
    base = np.load(path) if path.exists() else synthetic_normal(20_000, DIM)
    return np.resize(base.astype(np.float32), (n, DIM))


def vector_messages(rows: np.ndarray) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of SensorRecord JSON, keys round robin, ts = now (set once)."""
    now = time.time()
    out = []
    for i, row in enumerate(rows.tolist()):
        key = f"machine-{i % KEYS}"
        out.append((key.encode(), orjson.dumps({"key": key, "ts": now + i * 1e-6, "values": row})))
    return out


def image_messages(n: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of random 28x28 uint8 images in the binary frame."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8)
    now = time.time()
    return [
        (f"camera-{i % KEYS}".encode(), encode_frame(f"camera-{i % KEYS}", now + i * 1e-6, img))
        for i, img in enumerate(images)
    ]


def create_topics(bootstrap: str, topics: dict[str, int], config: dict[str, str] | None = None
                  ) -> None:  # fmt: skip
    """Create ``{name: partitions}`` (replication 1) with an optional topic config."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, parts, 1, config=config or {}) for name, parts in topics.items()]
    for future in admin.create_topics(new).values():
        future.result(30)


def write_topic(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Produce every message and wait for all acknowledgements."""
    failed: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "compression.type": "lz4", "on_delivery": delivered})  # fmt: skip
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) or failed:
        raise BenchError(f"could not write the input topic {topic}: {failed[:3]}")


def train_bundles(rows: np.ndarray, out: Path, seed: int = 0) -> dict[str, Path]:
    """Bundles of default size, one short epoch each: ``vector`` (38 dims, the default
    3-member ensemble), ``vector-single`` (the same with ``members=1``, the CPU-throughput
    choice) and ``image`` (1x28x28)."""
    vector = AMADetector(kind="vector").fit(rows[:4096], epochs=1, seed=seed, progress=False)
    single = AMADetector(kind="vector", members=1)
    single.fit(rows[:4096], epochs=1, seed=seed, progress=False)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(256, *IMAGE_SHAPE)).astype(np.float32)
    image = AMADetector(kind="image").fit(pixels, epochs=1, seed=seed, progress=False)
    return {
        "vector": vector.save(out / "vector"),
        "vector-single": single.save(out / "vector-single"),
        "image": image.save(out / "image"),
    }
