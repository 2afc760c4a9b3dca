"""Input contracts: round trips, strictness, event-time parsing, image payloads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.records import F32_MAX, ImageRecord, SensorRecord
from schemas.timestamps import TimestampError, parse_ts


def _image(shape: list[int], array: np.ndarray, dtype: str = "uint8") -> dict[str, object]:
    return {"shape": shape, "dtype": dtype, "data": base64.b64encode(array.tobytes()).decode()}


def test_sensor_record_round_trip() -> None:
    record = SensorRecord(key="pump-1", ts=1.7e9, values=[1.0, -2.5, 3], attrs={"site": "a"})
    assert SensorRecord.model_validate_json(record.model_dump_json()) == record


def test_image_record_round_trip_and_pixels() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    record = ImageRecord.model_validate({"key": "cam", "ts": 5, "image": _image([3, 4], pixels)})
    again = ImageRecord.model_validate_json(record.model_dump_json())
    assert again == record
    np.testing.assert_array_equal(again.image.pixels(), pixels)


@pytest.mark.parametrize(
    "values",
    [[True], ["1.0"], [[1.0]], [None], [float("nan")], [float("inf")], [F32_MAX * 2]],
)
def test_sensor_values_are_strict_finite_float32_numbers(values: list[object]) -> None:
    with pytest.raises(ValidationError):
        SensorRecord.model_validate({"key": "k", "ts": 1, "values": values})


@pytest.mark.parametrize(
    "payload",
    [
        {"ts": 1, "values": [1.0]},
        {"key": "", "ts": 1, "values": [1.0]},
        {"key": 7, "ts": 1, "values": [1.0]},
        {"key": "k", "ts": True, "values": [1.0]},
        {"key": "k", "ts": "1700000000", "values": [1.0]},
        {"key": "k", "ts": 1, "values": [1.0], "attrs": {"a": 1}},
    ],
)
def test_sensor_record_rejects(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SensorRecord.model_validate(payload)


def test_unknown_fields_are_ignored() -> None:
    record = SensorRecord.model_validate({"key": "k", "ts": 1, "values": [1.0], "extra": 1})
    assert record.values == [1.0]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (1700000000, 1700000000.0),
        (1700000000.25, 1700000000.25),
        ("2023-11-14T22:13:20Z", 1700000000.0),
        ("2023-11-14T22:13:20+00:00", 1700000000.0),
        ("2023-11-15T00:13:20+02:00", 1700000000.0),
        ("2023-11-14T22:13:20.5", 1700000000.5),  # no offset: UTC
        ("2023-11-14", datetime(2023, 11, 14, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_ts(given: object, expected: float) -> None:
    assert parse_ts(given) == expected
    assert SensorRecord(key="k", ts=given, values=[]).ts == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, "yesterday", "1700000000", float("nan"), [1]])
def test_parse_ts_rejects(bad: object) -> None:
    with pytest.raises(TimestampError):
        parse_ts(bad)


@pytest.mark.parametrize(
    "image",
    [
        {"shape": [2, 2], "dtype": "uint8", "data": "AAAA"},  # 3 bytes, needs 4
        {"shape": [2, 2, 2, 2], "dtype": "uint8", "data": "AAAAAA=="},
        {"shape": [0, 2], "dtype": "uint8", "data": ""},
        {"shape": [2, 2], "dtype": "int16", "data": "AAAAAA=="},
        {"shape": [2, 2], "dtype": "uint8", "data": "AA*AAA=="},
        _image([1, 2], np.array([1.0, np.nan], dtype="<f4"), "float32"),
    ],
)
def test_image_payload_rejects(image: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ImageRecord.model_validate({"key": "cam", "ts": 1, "image": image})
