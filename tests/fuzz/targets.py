"""The fuzz targets: every decoder of bytes that come from outside the process, each with the
invariant it must keep on *any* input. Shared by the Hypothesis property tests
(test_fuzz_properties.py) and the coverage-guided atheris harness (fuzz_decoders.py), so both
check the same thing: a valid decode or a reject with a documented, stable code, never an
exception.

Outside bytes reach ama-stream through the input topic (vector and image decoders, the image
frame), the scores and alerts topics (the dashboard's parsers, the retrain job's verdict and
label joins) and Redis (the registry's pointer).
"""

from __future__ import annotations

import numpy as np

from schemas.decode import REJECT_CODES, DecodedBatch, decode_images, decode_vectors
from schemas.framing import FrameError, decode_frame, encode_frame
from streamer.dashboard.ingest import parse_alerts, parse_scores
from streamer.lifecycle.registry import Pointer, RegistryError
from streamer.lifecycle.training_set import labels_of, verdicts_of
from streamer.lifecycle.window import Raw

DIM = 3
IMAGE_SHAPE = (1, 2, 2)
MAX_BYTES = 4096  # small, so that fuzzed inputs also cross the size limit


def _check_batch(batch: DecodedBatch, raw: list[bytes | None], tail: tuple[int, ...]) -> None:
    """Every input is accounted for exactly once: accepted, or rejected with a known code."""
    accepted = batch.index.tolist()
    rejected = [r.index for r in batch.rejects]
    assert sorted(accepted + rejected) == list(range(len(raw))), (accepted, rejected)
    assert rejected == sorted(rejected)
    for reject in batch.rejects:
        assert reject.code in REJECT_CODES, reject
        assert isinstance(reject.detail, str) and reject.detail
    assert batch.values.dtype == np.float32 and batch.values.shape == (len(accepted), *tail)
    assert np.isfinite(batch.values).all()
    assert batch.ts.shape == (len(accepted),) and np.isfinite(batch.ts).all()
    assert len(batch.keys) == len(accepted) and all(isinstance(k, str) and k for k in batch.keys)


def _alone(batch: DecodedBatch, i: int) -> str | None:
    """Record ``i``'s fate in ``batch``: its reject code, or None when accepted."""
    return next((r.code for r in batch.rejects if r.index == i), None)


def check_vectors(raw: list[bytes | None]) -> DecodedBatch:
    """Any batch of values: each record accepted or rejected, and its fate does not depend on
    its neighbours (a record decoded alone gets the same code as in the batch)."""
    batch = decode_vectors(raw, dim=DIM, max_bytes=MAX_BYTES)
    _check_batch(batch, raw, (DIM,))
    for i, value in enumerate(raw):
        alone = decode_vectors([value], dim=DIM, max_bytes=MAX_BYTES)
        assert _alone(alone, 0) == _alone(batch, i), (value, _alone(alone, 0), _alone(batch, i))
    return batch


def check_images(raw: list[bytes | None]) -> DecodedBatch:
    """As :func:`check_vectors`, for image records (JSON and binary frames)."""
    batch = decode_images(raw, shape=IMAGE_SHAPE, max_bytes=MAX_BYTES)
    _check_batch(batch, raw, IMAGE_SHAPE)
    for i, value in enumerate(raw):
        alone = decode_images([value], shape=IMAGE_SHAPE, max_bytes=MAX_BYTES)
        assert _alone(alone, 0) == _alone(batch, i)
    return batch


def check_frame(raw: bytes) -> None:
    """A frame parses, and re-encodes to the same bytes, or is refused with FrameError."""
    try:
        key, ts, pixels = decode_frame(raw)
    except FrameError:
        return
    # The reserved byte is not checked on read; everything else must round-trip.
    assert encode_frame(key, ts, pixels)[8:] == raw[8:], raw
    assert encode_frame(key, ts, pixels)[:7] == raw[:7], raw


def check_pointer(raw: bytes) -> None:
    """The registry pointer read from Redis: parsed, or a RegistryError."""
    try:
        pointer = Pointer.parse(raw)
    except RegistryError:
        return
    assert isinstance(pointer.version, str) and all(isinstance(n, int) for n in pointer.input_shape)


def check_outputs(raw: list[bytes]) -> None:
    """The readers of our own output topics (the dashboard, the retrain job) skip anything that
    is not an event of theirs; a producer that writes junk there cannot stop them."""
    batch, flagged, bad = parse_scores(raw)
    assert len(batch.keys) + bad == len(raw) and len(flagged) <= len(batch.keys)
    alerts, bad_alerts = parse_alerts(raw)
    assert len(alerts) + bad_alerts == len(raw)
    events = [Raw(0, i, 0, value) for i, value in enumerate(raw)]
    wanted = {(0, i): i for i in range(len(raw))}
    assert len(verdicts_of(events, "ama.input", wanted)) == len(raw)
    assert len(labels_of(events, [("k", float(i)) for i in range(len(raw))])) == len(raw)


def check_any(data: bytes) -> None:
    """One fuzzer input through every target (the first byte picks how the rest is split)."""
    if not data:
        return
    selector, body = data[0], data[1:]
    parts: list[bytes | None] = list(body.split(b"\x00\xff")) if selector & 1 else [body]
    if selector & 2:
        parts.append(None)
    check_vectors(parts)
    check_images(parts)
    framed = b"AMIF" + body if selector & 4 else body
    check_frame(framed)
    check_images([framed])
    check_pointer(body)
    check_outputs([p for p in parts if p is not None])
