"""The batch decoder: every reject code, isolation of bad records, and parity with the models."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from schemas.decode import REJECT_CODES, DecodedBatch, decode_images, decode_vectors
from schemas.framing import encode_frame
from schemas.records import ImageRecord, SensorRecord

DIM = 3
LIMIT = 10_000


def vec(**fields: object) -> bytes:
    record: dict[str, object] = {"key": "k", "ts": 1.0, "values": [1.0, 2.0, 3.0]}
    record.update(fields)
    return orjson.dumps({name: value for name, value in record.items() if value is not ...})


def _codes(batch: DecodedBatch) -> list[str]:
    return [reject.code for reject in batch.rejects]


VECTOR_CASES: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (b"", "empty"),
    (vec(key="x" * LIMIT), "oversized"),
    (b'{"key": "\xff", "ts": 1, "values": [1, 2, 3]}', "not_utf8"),
    (b'{"key": "k", "ts": 1, "values": [1, 2, 3]', "not_json"),
    (b'{"key": "k", "ts": 1, "values": [NaN, 2, 3]}', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"text"', "not_object"),
    (vec(key=...), "missing_field"),
    (vec(ts=...), "missing_field"),
    (vec(values=...), "missing_field"),
    (vec(key=7), "wrong_type"),
    (vec(key=""), "wrong_type"),
    (vec(ts=True), "wrong_type"),
    (vec(ts=None), "wrong_type"),
    (vec(ts="last tuesday"), "wrong_type"),
    (vec(values=None), "wrong_type"),
    (vec(values="1,2,3"), "wrong_type"),
    (vec(values=[1.0, True, 3.0]), "wrong_type"),
    (vec(values=[1.0, "2", 3.0]), "wrong_type"),
    (vec(values=[1.0, [2.0], 3.0]), "wrong_type"),
    (vec(values=[1.0, None, 3.0]), "wrong_type"),
    (vec(values=[1.0, {"v": 2}, 3.0]), "wrong_type"),
    (vec(attrs={"a": 1}), "wrong_type"),
    (vec(attrs=["a"]), "wrong_type"),
    (vec(values=[1.0, 2.0]), "wrong_dimension"),
    (vec(values=[]), "wrong_dimension"),
    (vec(values=[1.0, 1e39, 3.0]), "non_finite"),
    (b'{"key": "k", "ts": 1, "values": [1e400, 2, 3]}', "non_finite"),
    (vec(ts=-1e9), "ts_out_of_range"),
    (vec(ts=1e300), "ts_out_of_range"),
    (vec(ts=4102444800), "ts_out_of_range"),  # 2100-01-01: the first second refused
    (vec(ts="9999-12-31T00:00:00Z"), "ts_out_of_range"),
    (b'{"key": "k", "ts": 1, "ts": 2, "values": [1, 2, 3]}', "duplicate_field"),
    (b'{"key": "k", "key": "j", "ts": 1, "values": [1, 2, 3]}', "duplicate_field"),
    (b'{"key": "k", "ts": 1, "values": [1, 2, 3], "values": [4, 5, 6]}', "duplicate_field"),
    (
        b'{"key": "k", "ts": 1, "values": [1, 2, 3], "attrs": {"a": "1", "a": "2"}}',
        "duplicate_field",
    ),
]


@pytest.mark.parametrize(("raw", "code"), VECTOR_CASES)
def test_vector_reject_codes(raw: bytes | None, code: str) -> None:
    batch = decode_vectors([raw], dim=DIM, max_bytes=LIMIT)
    assert _codes(batch) == [code]
    assert batch.rejects[0].index == 0 and batch.rejects[0].detail
    assert batch.values.shape == (0, DIM) and batch.values.dtype == np.float32
    assert batch.keys == [] and batch.ts.shape == (0,) and batch.index.shape == (0,)


def test_every_documented_code_is_exercised() -> None:
    exercised = {code for _, code in VECTOR_CASES} | {code for _, code in IMAGE_CASES}
    assert exercised == set(REJECT_CODES)


def test_mixed_batch_keeps_good_records_in_order() -> None:
    raw: list[bytes | None] = []
    expected_rows, expected_keys, expected_ts, expected_index = [], [], [], []
    for i, (bad, _) in enumerate(VECTOR_CASES):
        row = [float(i), i + 0.5, -float(i)]
        raw.append(vec(key=f"good-{i}", ts=i, values=row))
        expected_rows.append(row)
        expected_keys.append(f"good-{i}")
        expected_ts.append(float(i))
        expected_index.append(2 * i)
        raw.append(bad)
    raw.append(vec(key="iso", ts="1970-01-01T00:00:10Z", values=[1, 2, 3]))

    batch = decode_vectors(raw, dim=DIM, max_bytes=LIMIT)

    assert [(r.index, r.code) for r in batch.rejects] == [
        (2 * i + 1, code) for i, (_, code) in enumerate(VECTOR_CASES)
    ]
    np.testing.assert_array_equal(batch.values[:-1], np.array(expected_rows, dtype=np.float32))
    np.testing.assert_array_equal(batch.values[-1], [1, 2, 3])
    assert batch.keys == [*expected_keys, "iso"]
    np.testing.assert_array_equal(batch.ts, [*expected_ts, 10.0])
    np.testing.assert_array_equal(batch.index, [*expected_index, len(raw) - 1])
    assert batch.ts.dtype == np.float64 and batch.index.dtype == np.int64


@pytest.mark.parametrize(("raw", "code"), VECTOR_CASES)
def test_decoder_agrees_with_the_model(raw: bytes | None, code: str) -> None:
    """A record the decoder rejects the model rejects too, unless only its dimension is off."""
    accepted_by_model = True
    try:
        record = SensorRecord.model_validate_json(raw or b"")
    except ValidationError:
        accepted_by_model = False
    if code in ("empty", "oversized", "duplicate_field"):
        return  # limits the model does not know about; pydantic keeps a field's last copy
    if code == "wrong_dimension":
        assert accepted_by_model and len(record.values) != DIM
    else:
        assert not accepted_by_model


def test_field_names_inside_values_are_not_duplicates() -> None:
    raw = (
        b'{"key": "key", "ts": 4102444799.5, "values": [1, 2, 3],'
        b' "attrs": {"ts": "\\"values\\"", "key": "ts"}, "note": "\\"key\\" \\"ts\\""}'
    )
    batch = decode_vectors([raw], dim=DIM, max_bytes=LIMIT)
    assert batch.rejects == [] and batch.keys == ["key"] and batch.ts.tolist() == [4102444799.5]


def test_valid_record_matches_the_model() -> None:
    raw = vec(ts="2024-01-01T00:00:00+01:00", values=[1, -2.5, 3e38], attrs={"a": "b"})
    batch = decode_vectors([raw], dim=DIM, max_bytes=LIMIT)
    record = SensorRecord.model_validate_json(raw)
    assert batch.keys == [record.key] and batch.ts.tolist() == [record.ts]
    np.testing.assert_array_equal(batch.values[0], np.array(record.values, dtype=np.float32))


# --- images --------------------------------------------------------------------------------

SHAPE = (1, 2, 3)


def img(
    shape: list[object] | None = None, dtype: str = "uint8", data: str | None = None, **kw: object
) -> bytes:
    pixels = np.arange(6, dtype=np.uint8 if dtype == "uint8" else np.float32)
    image: dict[str, object] = {
        "shape": shape if shape is not None else [2, 3],
        "dtype": dtype,
        "data": data if data is not None else base64.b64encode(pixels.tobytes()).decode(),
    }
    record: dict[str, object] = {"key": "cam", "ts": 1.0, "image": image}
    record.update(kw)
    return orjson.dumps({name: value for name, value in record.items() if value is not ...})


FRAME = encode_frame("cam", 2.0, np.arange(6, dtype=np.uint8).reshape(1, 2, 3))
NAN_IMAGE = np.full((2, 3), np.nan, dtype=np.float32)

IMAGE_CASES: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (FRAME + bytes(LIMIT), "oversized"),
    (b"{\xff}", "not_utf8"),
    (b"{", "not_json"),
    (b"[]", "not_object"),
    (img(image=...), "missing_field"),
    (img(image={"shape": [2, 3], "dtype": "uint8"}), "missing_field"),
    (img(image="abc"), "wrong_type"),
    (img(shape=[2, True]), "wrong_type"),
    (img(shape=[2.0, 3]), "wrong_type"),
    (img(dtype="int16"), "wrong_type"),
    (img(image={"shape": [2, 3], "dtype": "uint8", "data": 5}), "wrong_type"),
    (img(data="AA*A"), "bad_base64"),
    (img(data="AAA"), "bad_base64"),
    (img(data=base64.b64encode(bytes(5)).decode()), "bad_image_shape"),
    # Another shape is refused before its base64 is decoded (no pixels allocated for it).
    (img(shape=[2, 2]), "wrong_dimension"),
    (img(shape=[4000, 4000], data="A" * 8), "wrong_dimension"),
    (img(shape=[6]), "bad_image_shape"),
    (img(shape=[0, 3]), "bad_image_shape"),
    (img(shape=[3, 2, 1]), "wrong_dimension"),
    (img(dtype="float32", data=base64.b64encode(NAN_IMAGE.tobytes()).decode()), "non_finite"),
    (encode_frame("cam", 1.0, NAN_IMAGE), "non_finite"),
    (FRAME[:-1], "bad_frame"),
    (encode_frame("cam", 1.0, np.zeros((3, 2), dtype=np.uint8)), "wrong_dimension"),
    (encode_frame("cam", -5.0, np.zeros((2, 3), dtype=np.uint8)), "ts_out_of_range"),
    (img(ts=1e13), "ts_out_of_range"),  # milliseconds sent as seconds
    (
        b'{"key": "cam", "ts": 1, "image": {"shape": [2, 3], "shape": [3, 2], "dtype": "uint8",'
        b' "data": "AAECAwQF"}}',
        "duplicate_field",
    ),
]


@pytest.mark.parametrize(("raw", "code"), IMAGE_CASES)
def test_image_reject_codes(raw: bytes | None, code: str) -> None:
    batch = decode_images([raw], shape=SHAPE, max_bytes=LIMIT)
    assert _codes(batch) == [code]
    assert batch.values.shape == (0, *SHAPE)


@pytest.mark.parametrize(("raw", "code"), [c for c in IMAGE_CASES if c[0] and c[0][:1] == b"{"])
def test_image_decoder_agrees_with_the_model(raw: bytes, code: str) -> None:
    if code == "duplicate_field":
        return  # pydantic keeps a field's last copy
    try:
        record = ImageRecord.model_validate_json(raw)
    except ValidationError:  # refused for its shape first when that is not the model's
        if code == "wrong_dimension":
            shape = orjson.loads(raw)["image"]["shape"]
            assert shape not in (list(SHAPE), list(SHAPE[1:]))
    else:
        assert code == "wrong_dimension" and record.image.shape != list(SHAPE)


def test_mixed_image_batch() -> None:
    floats = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 2, 3)
    raw: list[bytes | None] = [
        img(key="json-hw"),
        IMAGE_CASES[3][0],
        FRAME,
        img(key="json-chw", shape=[1, 2, 3]),
        None,
        encode_frame("float", 3.0, floats),
    ]
    batch = decode_images(raw, shape=SHAPE, max_bytes=LIMIT)
    assert [(r.index, r.code) for r in batch.rejects] == [(1, "not_json"), (4, "empty")]
    assert batch.keys == ["json-hw", "cam", "json-chw", "float"]
    assert batch.index.tolist() == [0, 2, 3, 5]
    assert batch.ts.tolist() == [1.0, 2.0, 1.0, 3.0]
    assert batch.values.dtype == np.float32 and batch.values.shape == (4, *SHAPE)
    ramp = np.arange(6, dtype=np.float32).reshape(SHAPE)
    for row in range(3):
        np.testing.assert_array_equal(batch.values[row], ramp)  # uint8 keeps 0..255 units
    np.testing.assert_array_equal(batch.values[3], floats)
