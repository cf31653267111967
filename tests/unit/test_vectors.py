"""Vectors as raw little-endian float32 bytes plus a shape."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from calinode.protocol import (
    ErrorCode,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    decode_vectors,
    encode_vectors,
    pack,
    unpack,
)
from protocol_strategies import EXAMPLES

float_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.dtype(">f4"), np.dtype(">f8")]),
    shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=8),
    elements=st.floats(-60_000, 60_000, width=16),
)


@given(float_arrays, st.booleans())
@settings(max_examples=EXAMPLES)
def test_round_trip_through_msgpack(a: np.ndarray[Any, Any], transpose: bool) -> None:
    if transpose:
        a = a.T  # not C-contiguous
    wire = encode_vectors(a)
    assert wire["dtype"] == "<f4" and wire["shape"] == list(a.shape)
    back = decode_vectors(unpack(pack({"v": wire}))["v"])
    assert back.dtype == np.dtype("<f4") and back.shape == a.shape
    np.testing.assert_array_equal(back, a.astype(np.float32))


def test_wire_form_is_little_endian_float32_in_c_order() -> None:
    wire = encode_vectors(np.array([[1.0, 2.0], [3.0, -0.5]]))
    assert wire == {
        "dtype": "<f4",
        "shape": [2, 2],
        "data": np.array([1, 2, 3, -0.5], dtype="<f4").tobytes(),
    }
    assert wire["data"][:4] == b"\x00\x00\x80\x3f"  # 1.0f, little-endian


def test_decoded_array_is_read_only_and_shares_the_bytes() -> None:
    wire = encode_vectors(np.arange(6, dtype=np.float32).reshape(2, 3))
    a = decode_vectors(wire)
    assert not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1.0
    assert a.copy().flags.writeable


def test_one_dimensional_and_empty() -> None:
    assert decode_vectors(encode_vectors(np.ones(3))).shape == (3,)
    assert decode_vectors(encode_vectors(np.zeros((0, 384)))).shape == (0, 384)
    assert decode_vectors(encode_vectors(np.zeros(0))).shape == (0,)


def test_nan_and_infinity_travel_as_they_are() -> None:
    back = decode_vectors(encode_vectors(np.array([np.nan, np.inf, -np.inf])))
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf


@pytest.mark.parametrize(
    "value",
    [
        [1.0, 2.0],
        np.array(1.0),
        np.zeros((2, 2, 2)),
        np.array([1, 2]),
        np.array([True]),
        np.array([1 + 2j]),
        np.array([1e300]),  # overflows float32
    ],
    ids=["list", "0-d", "3-d", "int", "bool", "complex", "overflow"],
)
def test_encode_refuses(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode_vectors(value)


GOOD: dict[str, Any] = {"dtype": "<f4", "shape": [2, 1], "data": bytes(8)}


@pytest.mark.parametrize(
    "obj",
    [
        [1.0, 2.0],
        {**GOOD, "dtype": "<f8"},
        {**GOOD, "dtype": ">f4"},
        {**GOOD, "dtype": b"<f4"},
        {**GOOD, "shape": [1, 1, 2]},
        {**GOOD, "shape": []},
        {**GOOD, "shape": (2, 1)},
        {**GOOD, "shape": [2, -1]},
        {**GOOD, "shape": [True, 2]},
        {**GOOD, "shape": [2.0, 1]},
        {**GOOD, "shape": [3, 1]},
        {**GOOD, "shape": [2**40, 2**40]},
        {**GOOD, "data": bytes(7)},
        {**GOOD, "data": "\x00" * 8},
        {**GOOD, "data": [0.0, 0.0]},
        {"dtype": "<f4", "shape": [2, 1]},
        {**GOOD, "extra": 1},
    ],
    ids=lambda obj: repr(obj)[:40],
)
def test_decode_refuses_with_bad_request(obj: object) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_vectors(obj)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_decode_checks_max_bin() -> None:
    decode_vectors(GOOD, Limits(max_bin=8))
    with pytest.raises(RemoteProtocolError):
        decode_vectors(GOOD, Limits(max_bin=7))


def test_decode_can_pin_the_dimension() -> None:
    assert decode_vectors(encode_vectors(np.zeros((2, 384))), dim=384).shape == (2, 384)
    assert decode_vectors(encode_vectors(np.zeros(384)), dim=384).shape == (384,)
    with pytest.raises(RemoteProtocolError) as info:
        decode_vectors(encode_vectors(np.zeros((2, 768))), dim=384)
    assert info.value.code is ErrorCode.BAD_REQUEST
