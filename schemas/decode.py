"""The batch decoder: raw Kafka message values -> one float32 array of valid records + rejects.

This is the hot path, so it does not build a pydantic object per record. Each value is parsed
with orjson and its fields are checked with exact ``type(...) is`` tests (which is also what
makes ``true`` not a number, as in the strict models in ``records.py``); the readings of all
records are then gathered into one array and checked for finiteness in one vectorised pass,
rejecting only the offending rows. Tests check that a record is accepted here exactly when
:class:`~schemas.records.SensorRecord` / :class:`~schemas.records.ImageRecord` accept it.

One bad record never raises and never spoils its neighbours: it becomes a :class:`Reject` with
a stable code (see :data:`REJECT_CODES` and docs/contracts.md) and the worker sends it to the
dead-letter topic.

Two rules go beyond the pydantic models: a record that names a field twice is refused
(``duplicate_field``; JSON parsers disagree on which copy wins, and a record must mean the same
to every consumer), and ``ts`` must lie in [1970, 2100) (``ts_out_of_range``, which the models
apply too).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
import orjson

from schemas.framing import FrameError, decode_frame, is_frame
from schemas.records import F32_MAX, IMAGE_DTYPES, PayloadError, image_pixels
from schemas.timestamps import TS_MAX, TS_MIN, TimestampError, parse_ts

__all__ = ["REJECT_CODES", "DecodedBatch", "Reject", "decode_images", "decode_vectors"]

#: Every reject code, with what it means. Stable: dashboards and DLQ consumers match on them.
REJECT_CODES: Final[dict[str, str]] = {
    "empty": "the message value is missing (a tombstone) or zero bytes",
    "oversized": "the message value is longer than limits.max_message_bytes",
    "not_utf8": "the value is not valid UTF-8",
    "not_json": "the value is not a JSON document",
    "not_object": "the JSON document is not an object",
    "missing_field": "a required field is absent",
    "wrong_type": "a field has the wrong JSON type or a value outside its allowed set",
    "wrong_dimension": "the vector length or image shape is not the model's input shape",
    "non_finite": "a reading or pixel is NaN, infinite, or beyond the float32 range",
    "ts_out_of_range": "ts is before 1970-01-01 or from 2100-01-01 on (UTC)",
    "duplicate_field": "the record names a field twice",
    "bad_base64": "image data is not valid standard base64",
    "bad_image_shape": "an image shape is malformed or does not match its byte count",
    "bad_frame": "a binary image frame is malformed (see docs/contracts.md, frame layout)",
}

_NUMBER: Final = frozenset((int, float))  # exact types: bool is an int subclass, not a number


@dataclass(frozen=True, slots=True)
class Reject:
    """One record the decoder refused."""

    index: int  # position in the raw list handed to the decoder
    code: str  # short, stable error code (a key of REJECT_CODES)
    detail: str  # message for a person


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The valid records of one raw batch, in their original order, and the rejects."""

    values: np.ndarray  # float32, (n_valid, d) for vectors or (n_valid, C, H, W) for images
    keys: list[str]  # record keys, aligned with values
    ts: np.ndarray  # float64 epoch seconds, aligned with values
    index: np.ndarray  # int64 positions of the valid records in the raw list
    rejects: list[Reject]  # sorted by index


class _Bad(Exception):
    """Internal: ends the checks of one record; becomes a Reject."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        names = [name for name, _ in pairs]
        twice = next(name for name in names if names.count(name) > 1)
        raise _Bad("duplicate_field", f"field {twice!r} appears twice")
    return doc


def _quotes(doc: Any) -> int:
    """How many ``"`` characters a JSON text of ``doc`` has when each member appears once.

    Iterative: a record nested a few hundred levels deep (orjson accepts up to 1024) must not
    exhaust Python's recursion limit, which a recursive walk would (found by fuzzing).
    """
    count = 0
    pending = [doc]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str:
            count += 2 + item.count('"')
        elif kind is dict:
            count += sum(2 + name.count('"') for name in item)
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return count


def _check_unique(value: bytes, doc: dict[str, Any]) -> None:
    """Refuse a record that names a field twice (at any depth).

    orjson keeps the last copy silently. Every member a JSON object names adds at least the two
    quotes around its name, so a text with exactly the quotes its parsed document accounts for
    has no duplicate; only one with more (or with escaped quotes) is re-parsed exactly with the
    standard library, which reports every pair.
    """
    if value.count(b'"') != _quotes(doc):
        try:
            json.loads(value, object_pairs_hook=_unique_object)
        except RecursionError:  # the standard parser's own limit: deeper than a record needs
            raise _Bad("not_json", "nested too deeply to check for duplicate fields") from None


def _load_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """Size-check and parse one value into a JSON object, or raise _Bad."""
    if value is None or not value:
        raise _Bad("empty", "message value is empty")
    if len(value) > max_bytes:
        raise _Bad("oversized", f"message is {len(value)} bytes, limit {max_bytes}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            str(value, "utf-8")
        except UnicodeDecodeError as utf_exc:
            raise _Bad("not_utf8", f"not valid UTF-8: {utf_exc.reason}") from None
        # orjson refuses numbers that overflow a double (1e400); the models call that non-finite.
        code = "non_finite" if "infinity" in str(exc) else "not_json"
        raise _Bad(code, f"not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise _Bad("not_object", f"JSON document is a {type(doc).__name__}, not an object")
    _check_unique(value, doc)
    return doc


def _field(doc: dict[str, Any], name: str) -> Any:
    try:
        return doc[name]
    except KeyError:
        raise _Bad("missing_field", f"field {name!r} is missing") from None


def _key_and_ts(doc: dict[str, Any]) -> tuple[str, float]:
    """The checks SensorRecord and ImageRecord share: key, ts, and (optional) attrs."""
    key = _field(doc, "key")
    ts = _field(doc, "ts")
    if type(key) is not str or not key:
        raise _Bad("wrong_type", "key must be a non-empty string")
    if type(ts) not in _NUMBER:  # the common, fast case is a plain number: orjson's are finite
        try:
            ts = parse_ts(ts)
        except TimestampError as exc:
            raise _Bad("wrong_type", str(exc)) from None
    return key, ts


def _check_attrs(doc: dict[str, Any]) -> None:
    attrs = doc.get("attrs")
    if attrs is not None and (
        type(attrs) is not dict or any(type(v) is not str for v in attrs.values())
    ):
        raise _Bad("wrong_type", "attrs must be an object of strings")


def _drop(batch: DecodedBatch, keep: np.ndarray, code: str, detail: str) -> DecodedBatch:
    """``batch`` without the rows where ``keep`` is False; each of those becomes a reject."""
    if keep.all():
        return batch
    dropped = [Reject(int(batch.index[row]), code, detail) for row in np.flatnonzero(~keep)]
    rejects = sorted(batch.rejects + dropped, key=lambda reject: reject.index)
    kept = np.flatnonzero(keep).tolist()
    return DecodedBatch(
        batch.values[keep], [batch.keys[row] for row in kept], batch.ts[keep],
        batch.index[keep], rejects,
    )  # fmt: skip


def _drop_out_of_range(batch: DecodedBatch) -> DecodedBatch:
    """Checked once per batch, vectorised, for every path a ts can come in by."""
    ok = (batch.ts >= TS_MIN) & (batch.ts < TS_MAX)
    return _drop(batch, ok, "ts_out_of_range", "ts is outside 1970-01-01 .. 2100-01-01 (UTC)")


def _empty(rejects: list[Reject], tail: tuple[int, ...]) -> DecodedBatch:
    return DecodedBatch(
        values=np.empty((0, *tail), dtype=np.float32),
        keys=[],
        ts=np.empty(0, dtype=np.float64),
        index=np.empty(0, dtype=np.int64),
        rejects=rejects,
    )


def decode_vectors(raw: Sequence[bytes | None], *, dim: int, max_bytes: int) -> DecodedBatch:
    """Decode SensorRecord JSON values whose ``values`` must have length ``dim``."""
    rejects: list[Reject] = []
    keys: list[str] = []
    ts_list: list[float] = []
    index: list[int] = []
    # All accepted readings, row after row, as C doubles: array.fromlist converts a whole list
    # in C, about twice as fast as numpy's conversion of nested lists.
    readings = array("d")
    loads = orjson.loads
    for i, value in enumerate(raw):
        try:
            # The common case is checked inline (this loop runs per record, and a call costs as
            # much as a check); anything unusual goes through the helpers, which find the exact
            # reject in the same order as before.
            try:
                if len(value) > max_bytes:  # type: ignore[arg-type]  # None: TypeError
                    raise ValueError
                doc = loads(value)  # type: ignore[arg-type]
                key, ts, values = doc["key"], doc["ts"], doc["values"]
                # _check_unique for the plain record: 6 quotes around the names, 2 around
                # the key; anything else takes the general check.
                if (
                    len(doc) != 3 or type(key) is not str or value.count(b'"') != 8 + key.count('"')  # type: ignore[union-attr]
                ):
                    _check_unique(value, doc)  # type: ignore[arg-type]
            except (TypeError, ValueError, KeyError):  # JSONDecodeError is a ValueError
                doc = _load_object(value, max_bytes)
                key, ts = _key_and_ts(doc)
                values = _field(doc, "values")
            if type(key) is not str or not key or type(ts) not in _NUMBER:
                key, ts = _key_and_ts(doc)  # a string ts, or the exact wrong_type reject
            if type(values) is not list:
                raise _Bad("wrong_type", "values must be an array of numbers")
            if len(values) != dim:
                raise _Bad("wrong_dimension", f"values has {len(values)} entries, expected {dim}")
            if not _NUMBER.issuperset(map(type, values)):  # exact types: rejects bools
                raise _Bad("wrong_type", "values must be an array of numbers")
            if "attrs" in doc:
                _check_attrs(doc)
            readings.fromlist(values)
        except _Bad as bad:
            rejects.append(Reject(i, bad.code, bad.detail))
            continue
        keys.append(key)
        ts_list.append(ts)
        index.append(i)
    if not keys:
        return _empty(rejects, (dim,))

    # (n, dim) float64 first, so that a reading too large for float32 is caught, not rounded.
    values64 = np.frombuffer(readings, dtype=np.float64).reshape(len(keys), dim)
    finite = np.all(np.abs(values64) <= F32_MAX, axis=1)  # orjson never yields NaN/inf itself
    batch = DecodedBatch(
        values64, keys, np.array(ts_list, np.float64), np.array(index, np.int64), rejects
    )
    batch = _drop_out_of_range(_drop(batch, finite, "non_finite", "a reading is beyond float32"))
    return replace(batch, values=batch.values.astype(np.float32))


def _json_image(doc: dict[str, Any], accepted: set[tuple[int, ...]]) -> np.ndarray:
    """The pixels of an ImageRecord object, checked as strictly as ImagePayload.

    A well-formed shape other than the model's is refused before the base64 text is decoded,
    so a record never makes the worker allocate pixels it cannot score.
    """
    image = _field(doc, "image")
    if type(image) is not dict:
        raise _Bad("wrong_type", "image must be an object")
    shape = _field(image, "shape")
    dtype = _field(image, "dtype")
    data = _field(image, "data")
    if type(shape) is not list or any(type(d) is not int for d in shape):
        raise _Bad("wrong_type", "image.shape must be an array of integers")
    if type(dtype) is not str or dtype not in IMAGE_DTYPES:
        raise _Bad("wrong_type", f"image.dtype must be one of {sorted(IMAGE_DTYPES)}")
    if type(data) is not str:
        raise _Bad("wrong_type", "image.data must be a base64 string")
    if len(shape) in (2, 3) and min(shape) >= 1 and tuple(shape) not in accepted:
        raise _Bad("wrong_dimension", f"image shape {shape}, expected {max(accepted, key=len)}")
    try:
        return image_pixels(shape, dtype, data)
    except PayloadError as exc:
        raise _Bad(exc.code, exc.detail) from None


def _image(
    value: bytes | None, max_bytes: int, accepted: set[tuple[int, ...]]
) -> tuple[str, float, np.ndarray]:
    """Key, ts and pixels of one image value, JSON or binary frame."""
    if value and len(value) <= max_bytes and is_frame(value):
        try:
            key, ts, pixels = decode_frame(value)
        except FrameError as exc:
            raise _Bad("bad_frame", str(exc)) from None
        if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
            raise _Bad("non_finite", "image has NaN or infinite pixels")
        return key, ts, pixels
    doc = _load_object(value, max_bytes)
    key, ts = _key_and_ts(doc)
    pixels = _json_image(doc, accepted)
    return key, ts, pixels


def decode_images(
    raw: Sequence[bytes | None], *, shape: tuple[int, int, int], max_bytes: int
) -> DecodedBatch:
    """Decode images (ImageRecord JSON or binary frames) of model input ``shape`` (C, H, W).

    An [H, W] image is accepted when C is 1. Pixels come out as float32 in the units of their
    wire dtype (0..255 for uint8).
    """
    channels, height, width = shape
    accepted = {tuple(shape)} | ({(height, width)} if channels == 1 else set())
    out = np.empty((len(raw), *shape), dtype=np.float32)
    rejects: list[Reject] = []
    keys: list[str] = []
    ts_list: list[float] = []
    index: list[int] = []
    for i, value in enumerate(raw):
        try:
            key, ts, pixels = _image(value, max_bytes, accepted)
            if pixels.shape not in accepted:
                raise _Bad(
                    "wrong_dimension", f"image shape {list(pixels.shape)}, expected {list(shape)}"
                )
        except _Bad as bad:
            rejects.append(Reject(i, bad.code, bad.detail))
            continue
        out[len(keys)] = pixels.reshape(shape)  # casts to float32 on assignment
        keys.append(key)
        ts_list.append(ts)
        index.append(i)
    if not keys:
        return _empty(rejects, tuple(shape))
    return _drop_out_of_range(
        DecodedBatch(
            values=out[: len(keys)],
            keys=keys,
            ts=np.array(ts_list, dtype=np.float64),
            index=np.array(index, dtype=np.int64),
            rejects=rejects,
        )
    )
