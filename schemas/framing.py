"""The binary image frame: the fast path for images, without JSON or base64.

Base64 costs a third more bytes and a decode pass; for camera streams the frame below carries
the raw pixels after a small fixed header instead. All integers and the timestamp are
little-endian.

======  =====  ==========================================================================
offset  size   field
======  =====  ==========================================================================
0       4      magic ``b"AMIF"`` (ama-stream image frame); JSON never starts with it
4       1      version, ``1``
5       1      dtype code: ``1`` = uint8, ``2`` = float32
6       1      ndim: ``2`` ([H, W]) or ``3`` ([C, H, W])
7       1      reserved, ``0``
8       8      ts, float64 epoch seconds
16      2      key length in bytes, uint16, >= 1
18      4*nd   dims, uint32 each, >= 1
..      klen   key, UTF-8
..      rest   pixels, C-order, little-endian; exactly prod(dims) * itemsize bytes
======  =====  ==========================================================================
"""

from __future__ import annotations

import math
import struct

import numpy as np

from schemas.errors import AmaStreamError
from schemas.records import IMAGE_DTYPES

__all__ = ["MAGIC", "VERSION", "FrameError", "decode_frame", "encode_frame", "is_frame"]

MAGIC = b"AMIF"
VERSION = 1

_HEADER = struct.Struct("<4sBBBBdH")  # magic, version, dtype, ndim, reserved, ts, key length
_CODE_TO_DTYPE = {1: "uint8", 2: "float32"}
_DTYPE_TO_CODE = {name: code for code, name in _CODE_TO_DTYPE.items()}
_MAX_KEY_BYTES = 0xFFFF  # the key length field is a uint16


class FrameError(AmaStreamError):
    """Bytes that are not a valid image frame, or an array that cannot be framed."""


def is_frame(raw: bytes) -> bool:
    """Whether ``raw`` claims to be a frame (by its magic); the decoder routes on this."""
    return raw[:4] == MAGIC


def encode_frame(key: str, ts: float, array: np.ndarray) -> bytes:
    """Frame one image: ``array`` is uint8 or float32 with shape (H, W) or (C, H, W)."""
    dtype_name = array.dtype.name
    if dtype_name not in _DTYPE_TO_CODE:
        raise FrameError(f"frame dtype must be uint8 or float32, not {dtype_name}")
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise FrameError(f"frame shape must be (H, W) or (C, H, W) of >= 1, not {array.shape}")
    if not math.isfinite(ts):
        raise FrameError("frame ts must be finite")
    key_bytes = key.encode("utf-8")
    if not 1 <= len(key_bytes) <= _MAX_KEY_BYTES:
        raise FrameError(f"frame key must be 1..{_MAX_KEY_BYTES} UTF-8 bytes")
    header = _HEADER.pack(
        MAGIC, VERSION, _DTYPE_TO_CODE[dtype_name], array.ndim, 0, ts, len(key_bytes)
    )
    dims = struct.pack(f"<{array.ndim}I", *array.shape)
    pixels = np.ascontiguousarray(array, dtype=IMAGE_DTYPES[dtype_name]).tobytes()
    return b"".join((header, dims, key_bytes, pixels))


def decode_frame(raw: bytes) -> tuple[str, float, np.ndarray]:
    """Parse a frame into ``(key, ts, pixels)``; pixels are a read-only view in the wire dtype.

    Raises :class:`FrameError` naming the first problem found. Pixel values are not checked
    here (a float32 frame may hold NaN); the batch decoder rejects those as ``non_finite``.
    """
    if len(raw) < _HEADER.size:
        raise FrameError(f"frame is {len(raw)} bytes, shorter than its {_HEADER.size}-byte header")
    magic, version, dtype_code, ndim, _reserved, ts, key_len = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise FrameError(f"frame magic is {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FrameError(f"frame version {version} is not supported (expected {VERSION})")
    dtype_name = _CODE_TO_DTYPE.get(dtype_code)
    if dtype_name is None:
        raise FrameError(f"frame dtype code {dtype_code} is unknown (1 = uint8, 2 = float32)")
    if ndim not in (2, 3):
        raise FrameError(f"frame ndim is {ndim}, expected 2 or 3")
    if not math.isfinite(ts):
        raise FrameError("frame ts is not finite")
    if key_len == 0:
        raise FrameError("frame key is empty")
    key_at = _HEADER.size + 4 * ndim
    pixels_at = key_at + key_len
    if len(raw) < pixels_at:
        raise FrameError(f"frame is {len(raw)} bytes, its header and key need {pixels_at}")
    dims = struct.unpack_from(f"<{ndim}I", raw, _HEADER.size)
    if 0 in dims:
        raise FrameError(f"frame dims {list(dims)} include a zero")
    try:
        key = raw[key_at:pixels_at].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("frame key is not valid UTF-8") from None
    dtype = IMAGE_DTYPES[dtype_name]
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - pixels_at != expected:
        raise FrameError(
            f"frame has {len(raw) - pixels_at} pixel bytes, dims {list(dims)} of {dtype_name} "
            f"need {expected}"
        )
    pixels = np.frombuffer(raw, dtype=dtype, offset=pixels_at).reshape(dims)
    return key, ts, pixels
