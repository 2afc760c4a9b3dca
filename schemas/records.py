"""Input wire contracts: what producers put on the input topic.

Two record kinds, one per model kind: :class:`SensorRecord` (a fixed-length vector of readings)
and :class:`ImageRecord` (a small image, base64 in JSON; the binary frame in ``framing.py`` is
the fast alternative). The models are strict (no string-to-number coercion, ``true`` is not a
number) because the batch decoder in ``decode.py`` applies exactly these rules without pydantic,
and the two must agree record for record.

Unknown top-level fields are ignored so producers can add their own metadata without breaking
workers.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from schemas.timestamps import in_range, parse_ts

__all__ = [
    "F32_MAX",
    "IMAGE_DTYPES",
    "ImageDType",
    "ImagePayload",
    "ImageRecord",
    "Key",
    "PayloadError",
    "SensorRecord",
    "Timestamp",
    "image_pixels",
]

#: Largest finite float32. Readings are scored as float32, so a larger magnitude would become
#: infinity on the device; it is rejected at the edge instead (reject code ``non_finite``).
F32_MAX = float(np.finfo(np.float32).max)

#: numpy dtype for each wire dtype name; explicit little-endian so the bytes mean the same on
#: every producer and worker.
IMAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "uint8": np.dtype("u1"),
    "float32": np.dtype("<f4"),
}

Key = Annotated[
    str,
    Field(min_length=1, description="Stream identity (device, machine, camera); per-key state."),
]

Timestamp = Annotated[
    float,
    BeforeValidator(parse_ts),
    AfterValidator(in_range),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMaximum": 4102444800,
                    "description": "Epoch seconds, 1970-01-01 .. 2100-01-01.",
                },
                {"type": "string", "description": "ISO-8601; without an offset it means UTC."},
            ]
        },
        mode="validation",
    ),
    Field(description="Event time, normalised to float epoch seconds (UTC)."),
]

Reading = Annotated[float, Field(allow_inf_nan=False, ge=-F32_MAX, le=F32_MAX)]

ImageDType = Literal["uint8", "float32"]


class PayloadError(ValueError):
    """An image payload that cannot be turned into pixels; ``code`` is its reject code.

    Shared by :class:`ImagePayload` (pydantic reports the message) and the batch decoder (which
    reports ``code``), so both apply the same rule.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def image_pixels(shape: list[int], dtype: str, data: str) -> np.ndarray:
    """Decode a base64 image payload to an array of ``shape`` in its wire dtype.

    ``shape`` and ``dtype`` must already be type-checked. Raises :class:`PayloadError` with code
    ``bad_image_shape`` (malformed shape, or byte count not matching it), ``bad_base64``, or
    ``non_finite`` (NaN/inf pixels in a float32 image).
    """
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise PayloadError("bad_image_shape", f"shape must be [H, W] or [C, H, W] of >= 1: {shape}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError("bad_base64", f"image data is not valid base64: {exc}") from None
    np_dtype = IMAGE_DTYPES[dtype]
    expected = math.prod(shape) * np_dtype.itemsize
    if len(raw) != expected:
        raise PayloadError(
            "bad_image_shape",
            f"image data has {len(raw)} bytes, shape {shape} of {dtype} needs {expected}",
        )
    pixels = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    if np_dtype.kind == "f" and not np.isfinite(pixels).all():
        raise PayloadError("non_finite", "image has NaN or infinite pixels")
    return pixels


class SensorRecord(BaseModel):
    """One reading of a vector-valued sensor stream.

    ``values`` has the dimension the model was trained on; the decoder enforces it, the model
    cannot know it. Readings must be finite and fit in float32.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    key: Key
    ts: Timestamp
    values: list[Reading] = Field(description="Readings, in the model's feature order.")
    attrs: dict[str, str] | None = Field(
        default=None, description="Free-form string labels, carried for the producer's use."
    )


class ImagePayload(BaseModel):
    """An image as shape, dtype and base64 bytes (C-order, little-endian)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    shape: list[int] = Field(min_length=2, max_length=3, description="[H, W] or [C, H, W].")
    dtype: ImageDType
    data: str = Field(description="Standard base64 of the raw pixel bytes.")

    @model_validator(mode="after")
    def _check_pixels(self) -> ImagePayload:
        """Reject data whose byte count does not match shape * dtype, so the worker never does."""
        image_pixels(self.shape, self.dtype, self.data)
        return self

    def pixels(self) -> np.ndarray:
        """The image as an array of ``shape`` in its wire dtype (read-only view)."""
        return image_pixels(self.shape, self.dtype, self.data)


class ImageRecord(BaseModel):
    """One small image (visual inspection); see also the binary frame in ``framing.py``."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    key: Key
    ts: Timestamp
    image: ImagePayload
