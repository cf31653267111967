"""msgpack codec: the bounded pre-scan, hostile payloads, and the memory bound of decoding."""

from __future__ import annotations

import functools
import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calinode.protocol import (
    DEFAULT_LIMITS,
    ErrorCode,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    pack,
    scan,
    unpack,
)
from protocol_strategies import EXAMPLES, keys, wire_values

MIB = 1024 * 1024


def packb(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def malformed(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Assert that ``data`` is refused with MALFORMED_FRAME; return the reason."""
    with pytest.raises(RemoteProtocolError) as info:
        unpack(data, limits)
    assert info.value.code is ErrorCode.MALFORMED_FRAME, info.value
    return info.value.message


def nested_arrays(depth: int) -> bytes:
    return b"\x81\xa1a" + b"\x91" * depth + b"\xc0"


@given(st.dictionaries(keys, wire_values, max_size=8))
@settings(max_examples=EXAMPLES)
def test_round_trip(obj: dict[str, Any]) -> None:
    data = pack(obj)
    assert unpack(data) == obj
    assert scan(data).objects >= 1 + 2 * len(obj)


def test_any_bytes_like_input() -> None:
    data = packb({"key": ["value", b"bin", {"nested": 1}]})
    for view in (data, bytearray(data), memoryview(data)):
        assert unpack(view) == {"key": ["value", b"bin", {"nested": 1}]}  # type: ignore[arg-type]


def test_scan_reports_objects_and_depth() -> None:
    result = scan(packb({"a": [1, {"b": []}], "c": "x"}))
    assert (result.objects, result.depth) == (9, 4)
    assert result.memory > 0


def test_pack_uses_bin_for_bytes_and_str_for_str() -> None:
    assert pack({"b": b"x"}) == b"\x81\xa1b\xc4\x01x"
    assert pack({"s": "x"}) == b"\x81\xa1s\xa1x"


@pytest.mark.parametrize(
    "obj",
    [{"x": {1, 2}}, {"x": object()}, {"x": 2**64}, {"x": -(2**63) - 1}, {"x": "\ud800"}],
    ids=["set", "object", "too-big", "too-small", "lone-surrogate"],
)
def test_pack_refuses_what_msgpack_cannot_encode(obj: object) -> None:
    with pytest.raises(LocalProtocolError):
        pack(obj)


def test_pack_with_limits_refuses_what_a_peer_would_refuse() -> None:
    with pytest.raises(LocalProtocolError) as info:
        pack({1: "int key"}, limits=DEFAULT_LIMITS)
    assert info.value.code is ErrorCode.MALFORMED_FRAME
    with pytest.raises(LocalProtocolError):
        pack([1, 2], limits=DEFAULT_LIMITS)
    with pytest.raises(LocalProtocolError) as info:
        pack({"x": bytes(200)}, limits=Limits(max_frame=100))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert pack({1: "int key"}) == b"\x81\x01\xa7int key"  # without limits: plain msgpack


# --- hostile payloads: each refused with MALFORMED_FRAME, never another exception ----------


def test_empty_payload() -> None:
    assert "empty" in malformed(b"")


@pytest.mark.parametrize(
    "obj", [[1, 2], 7, "text", b"bin", None, True, 1.5, []], ids=repr
)
def test_top_level_must_be_a_map(obj: object) -> None:
    assert "not a map" in malformed(packb(obj))


@pytest.mark.parametrize("cut", [1, 2, 5, 9, 13])
def test_truncated_payload(cut: int) -> None:
    data = packb({"key": "value", "n": 2**40, "b": b"xyz"})
    malformed(data[:cut])


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\xa1a\xdc\xff\xff",  # array16 claiming 65535 items, none present
        b"\x81\xa1a\xdf\x7f\xff\xff\xff",  # map32 claiming 2**31 entries
        b"\x81\xa1a\xdb\xff\xff\xff\xff",  # str32 claiming 4 GiB
        b"\x81\xa1a\xc6\x00\x10\x00\x00",  # bin32 claiming 1 MiB, none present
        b"\x81\xa1a\xcb\x00\x00",  # float64 with 2 of its 8 bytes
    ],
)
def test_lengths_beyond_the_payload(data: bytes) -> None:
    malformed(data)


def test_trailing_bytes() -> None:
    assert "trailing" in malformed(packb({"a": 1}) + b"\x00")
    assert "trailing" in malformed(packb({"a": 1}) + packb({"b": 2}))


@pytest.mark.parametrize(
    "key", [1, -1, b"bytes", 1.5, None, True, (1, 2)], ids=repr
)
def test_non_str_map_keys_anywhere(key: object) -> None:
    assert "not a str" in malformed(packb({key: 1}))
    assert "not a str" in malformed(packb({"a": [{"ok": {key: 1}}]}))


@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"abc\x80"], ids=repr
)
def test_invalid_utf8(raw: bytes) -> None:
    str_header = bytes([0xA0 | len(raw)])
    malformed(b"\x81\xa1a" + str_header + raw)
    malformed(b"\x81" + str_header + raw + b"\x01")  # as a key


def test_deep_nesting_1000_levels() -> None:
    assert "max_depth" in malformed(nested_arrays(1000))
    assert "max_depth" in malformed(b"\x81\xa1a" + b"\x81\xa1a" * 1000 + b"\xc0")
    unpack(nested_arrays(DEFAULT_LIMITS.max_depth - 1))  # the map is level 1


def test_many_one_element_arrays_nested_to_max_depth() -> None:
    chains = b"\xdc\x00\x10" + _repeat(b"\x91" * 29 + b"\xc0", 16_000) * 16  # depth 32 each
    assert "max_objects" in malformed(b"\x81\xa1a" + chains)


def test_huge_arrays_of_empty_strings() -> None:
    n = DEFAULT_LIMITS.max_array + 1
    assert "max_array" in malformed(b"\x81\xa1a\xdd" + struct.pack(">I", n) + b"\xa0" * n)
    many = {f"k{i}": [""] * 50_000 for i in range(5)}
    assert "max_objects" in malformed(packb(many))


@pytest.mark.parametrize(
    "ext",
    [
        msgpack.ExtType(1, b"x"),
        msgpack.ExtType(5, b"12"),
        msgpack.ExtType(0, b"1234"),
        msgpack.ExtType(2, b"12345678"),
        msgpack.ExtType(3, b"x" * 16),
        msgpack.ExtType(4, b"x" * 3),  # ext 8
        msgpack.ExtType(4, b"x" * 300),  # ext 16
        msgpack.ExtType(4, b"x" * 70_000),  # ext 32
        msgpack.Timestamp(1, 0),  # ext type -1
    ],
    ids=lambda e: f"ext{len(packb(e))}",
)
def test_ext_types(ext: object) -> None:
    assert "ext" in malformed(packb({"a": ext}))


def test_reserved_byte_0xc1() -> None:
    assert "0xc1" in malformed(b"\x81\xa1a\xc1")


def test_size_limits() -> None:
    tight = Limits(max_str=3, max_bin=3, max_array=3, max_map=3, max_objects=20)
    unpack(packb({"s": "abc", "b": b"abc", "l": [1, 2, 3]}), tight)
    assert "max_str" in malformed(packb({"s": "abcd"}), tight)
    assert "max_bin" in malformed(packb({"b": b"abcd"}), tight)
    assert "max_array" in malformed(packb({"l": [1, 2, 3, 4]}), tight)
    assert "max_map" in malformed(packb({"a": 1, "b": 2, "c": 3, "d": 4}), tight)
    assert "max_objects" in malformed(packb({"l": [[1, 2, 3]] * 3, "m": [[1, 2, 3]] * 3}), tight)


def test_frame_over_max_frame() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        unpack(packb({"b": bytes(200)}), Limits(max_frame=100))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_memory_budget_refuses_small_but_expensive_payloads() -> None:
    # 90 000 empty arrays: 90 KB on the wire, about 6 MB as Python lists.
    assert "memory" in malformed(b"\x81\xa1a\xdd" + struct.pack(">I", 90_000) + b"\x90" * 90_000)
    # 60 000 one-entry maps: 180 KB on the wire, about 11 MB as dicts.
    assert "memory" in malformed(packb({"a": [{"": 0}] * 60_000}))


# --- the memory bound -------------------------------------------------------------------


def traced_peak(decode: Callable[[], object]) -> int:
    """Peak traced memory (bytes) while ``decode`` runs, its result kept alive."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            result = decode()
        except RemoteProtocolError:
            result = None
        peak = tracemalloc.get_traced_memory()[1]
        del result
    finally:
        tracemalloc.stop()
    return peak


def _pad(prefix: bytes, size: int = 16 * MIB) -> bytes:
    """A map whose first entry is ``prefix``'s and whose last one is a bin filling ``size``."""
    entries = b"\xa1a" + prefix
    pad = size - len(entries) - 1 - 2 - 5
    return b"\x82" + entries + b"\xa1z\xc6" + struct.pack(">I", pad) + bytes(pad)


def _repeat(unit: bytes, count: int) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + unit * count


def _twice(unit: bytes, count: int = 99_990) -> bytes:
    """Two arrays of ``count`` ``unit`` values: close to max_objects in all."""
    return b"\x92" + _repeat(unit, count) * 2


def _astral_strings() -> bytes:
    """Four 4 MiB strs, each ASCII but for one emoji at the end (so decoded as UCS-4)."""
    body = b"x" * (4 * MIB - 20) + "\N{GRINNING FACE}".encode()
    entry = b"\xdb" + struct.pack(">I", len(body)) + body
    return b"\x84" + b"".join(b"\xa1" + bytes([65 + i]) + entry for i in range(4))


# name: (builder of a 15-16 MiB payload, whether it is within every limit and must decode)
HOSTILE_16_MIB: dict[str, tuple[Callable[[], bytes], bool]] = {
    "arrays-of-100k-empty-strings": (lambda: b"\xde\x00\xa0" + b"".join(
        b"\xa4" + f"k{i:03d}".encode() + _repeat(b"\xa0", 100_000) for i in range(160)
    ), False),
    "nested-one-element-arrays-16M-deep": (lambda: nested_arrays(16 * MIB - 8), False),
    "empty-maps-up-to-max_objects": (lambda: _pad(_twice(b"\x80")), True),
    "astral-strings-4-mib": (_astral_strings, True),
    "one-16-mib-bin": (lambda: _pad(b"\xc0"), True),
}


@pytest.mark.parametrize("name", HOSTILE_16_MIB)
def test_decoding_16_mib_of_hostile_content_stays_within_12_n_plus_1_mib(name: str) -> None:
    build, decodes = HOSTILE_16_MIB[name]
    data = build()
    assert 15 * MIB < len(data) <= 16 * MIB
    if decodes:
        unpack(data)  # the case is meaningful: it is within every limit
    else:
        malformed(data)
    peak = traced_peak(functools.partial(unpack, data))
    assert peak < 12 * len(data) + MIB, f"{name}: {peak / len(data):.1f} bytes per byte"


@pytest.mark.parametrize("name", ["empty-arrays", "one-entry-maps", "2-char-strings"])
def test_small_hostile_payloads_stay_within_12_n_plus_1_mib(name: str) -> None:
    unit = {"empty-arrays": b"\x90", "one-entry-maps": b"\x81\xa0\xc0", "2-char-strings": b"\xa2ab"}
    for count in (1_000, 10_000, 99_990):
        data = b"\x81\xa1a" + _repeat(unit[name], count)
        peak = traced_peak(functools.partial(unpack, data))
        assert peak < 12 * len(data) + MIB, f"{name} x{count}: {peak} bytes"


@given(st.dictionaries(keys, wire_values, max_size=8))
@settings(max_examples=EXAMPLES // 4)
def test_memory_estimate_bounds_what_msgpack_allocates(obj: dict[str, Any]) -> None:
    data = pack(obj)
    estimate = scan(data).memory
    warm = unpack(data)  # intern the keys first: the interned-str table is interpreter-wide
    peak = traced_peak(functools.partial(unpack, data))
    assert peak <= estimate + 16 * 1024
    assert warm == obj


ESTIMATE_CASES: dict[str, object] = {
    **{f"dict-{n}-entries": {f"key{i}": i for i in range(n)}
       for n in (5, 6, 10, 11, 21, 22, 42, 43, 85, 86, 170, 171, 341, 342, 682, 683, 1000)},
    **{f"list-{n}-items": [None] * n for n in (10_000, 10_001, 20_000, 50_000, 99_999)},
    **{f"strs-{len(c.encode())}-byte-chars": [("x" * 30 + c) * 3] * 2000
       for c in ("x", "\u00e9", "\u0100", "\u20ac", "\N{GRINNING FACE}")},
    "long-str-astral": "x" * 1_000_000 + "\N{GRINNING FACE}",
    "unique-keys-beyond-dedup": [{f"{i:06d}": None} for i in range(5_000)],
    "bins": [b"ab"] * 20_000,
    "floats": [1.5] * 20_000,
    "uint64": [2**64 - 1] * 20_000,
    "int16": [-30_000] * 20_000,
}


@pytest.mark.parametrize("name", ESTIMATE_CASES)
def test_memory_estimate_bounds_the_costly_shapes(name: str) -> None:
    data = pack({"v": ESTIMATE_CASES[name]})
    estimate = scan(data, Limits(max_expansion=1_000)).memory
    warm = unpack(data, Limits(max_expansion=1_000))
    peak = traced_peak(functools.partial(unpack, data, Limits(max_expansion=1_000)))
    assert peak <= estimate + 16 * 1024, f"{name}: peak {peak}, estimate {estimate}"
    del warm
