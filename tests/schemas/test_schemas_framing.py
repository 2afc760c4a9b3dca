"""The binary image frame: round trips and every way a frame can be broken."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from schemas.errors import AmaStreamError
from schemas.framing import MAGIC, FrameError, decode_frame, encode_frame, is_frame


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.uint8).reshape(2, 3),
        np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
        np.arange(6, dtype=">f4").reshape(2, 3),  # big-endian in, little-endian on the wire
    ],
)
def test_round_trip(array: np.ndarray) -> None:
    frame = encode_frame("cam-7 ✓", 1.7e9 + 0.125, array)
    assert is_frame(frame)
    key, ts, pixels = decode_frame(frame)
    assert (key, ts) == ("cam-7 ✓", 1.7e9 + 0.125)
    assert pixels.shape == array.shape
    np.testing.assert_array_equal(pixels, array)


def test_header_layout_is_as_documented() -> None:
    frame = encode_frame("k", 2.0, np.zeros((3, 4), dtype=np.uint8))
    assert frame[:4] == MAGIC == b"AMIF"
    assert struct.unpack_from("<BBBBdH", frame, 4) == (1, 1, 2, 0, 2.0, 1)
    assert struct.unpack_from("<2I", frame, 18) == (3, 4)
    assert frame[26:27] == b"k"
    assert len(frame) == 27 + 12


def _frame() -> bytearray:
    return bytearray(encode_frame("key", 1.0, np.zeros((2, 2), dtype=np.uint8)))


def _patched(offset: int, fmt: str, value: object) -> bytes:
    frame = _frame()
    struct.pack_into(fmt, frame, offset, value)
    return bytes(frame)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"AMIF", "shorter than"),
        (b"XXXX" + bytes(_frame()[4:]), "magic"),
        (_patched(4, "<B", 9), "version"),
        (_patched(5, "<B", 7), "dtype code"),
        (_patched(6, "<B", 4), "ndim"),
        (_patched(8, "<d", float("nan")), "ts"),
        (_patched(16, "<H", 0), "key is empty"),
        (_patched(16, "<H", 500), "header and key need"),
        (_patched(18, "<I", 0), "zero"),
        (_patched(26, "<B", 0xFF), "UTF-8"),
        (bytes(_frame()[:-1]), "pixel bytes"),
        (bytes(_frame()) + b"\x00", "pixel bytes"),
    ],
)
def test_decode_errors(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        decode_frame(raw)
    assert isinstance(info.value, AmaStreamError)


@pytest.mark.parametrize(
    ("key", "ts", "array"),
    [
        ("k", 1.0, np.zeros((2, 2), dtype=np.int16)),
        ("k", 1.0, np.zeros(4, dtype=np.uint8)),
        ("k", 1.0, np.zeros((0, 2), dtype=np.uint8)),
        ("k", float("inf"), np.zeros((2, 2), dtype=np.uint8)),
        ("", 1.0, np.zeros((2, 2), dtype=np.uint8)),
    ],
)
def test_encode_errors(key: str, ts: float, array: np.ndarray) -> None:
    with pytest.raises(FrameError):
        encode_frame(key, ts, array)
