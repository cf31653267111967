"""Length-prefixed framing: splits, limits, broken state, linear cost."""

from __future__ import annotations

import copy
import pickle
import struct
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calinode.protocol import (
    DEFAULT_LIMITS,
    NEED_DATA,
    ConfigError,
    ErrorCode,
    FrameDecoder,
    Limits,
    LocalProtocolError,
    NeedData,
    RemoteProtocolError,
    encode_frame,
)
from protocol_strategies import EXAMPLES, splits

SMALL = Limits(max_frame=100)


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while not isinstance(frame := decoder.next_frame(), NeedData):
        frames.append(frame)
    return frames


def test_encode_frame_prefixes_the_big_endian_length() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert encode_frame(bytes(300))[:4] == b"\x00\x00\x01\x2c"


def test_encode_frame_refuses_a_payload_over_the_limit() -> None:
    assert encode_frame(bytes(100), SMALL)[:4] == struct.pack(">I", 100)
    with pytest.raises(LocalProtocolError) as info:
        encode_frame(bytes(101), SMALL)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_need_data_is_a_singleton() -> None:
    assert NeedData() is NEED_DATA
    assert copy.copy(NEED_DATA) is NEED_DATA
    assert pickle.loads(pickle.dumps(NEED_DATA)) is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_empty_decoder() -> None:
    decoder = FrameDecoder()
    assert decoder.next_frame() is NEED_DATA
    assert decoder.buffered == 0 and decoder.at_boundary


def test_zero_length_frame_is_returned_as_empty_bytes() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"") + encode_frame(b"x"))
    assert drain(decoder) == [b"", b"x"]


def test_byte_at_a_time() -> None:
    payloads = [b"hello", b"", bytes(range(256)) * 3]
    decoder = FrameDecoder()
    received = []
    for byte in b"".join(map(encode_frame, payloads)):
        decoder.feed(bytes([byte]))
        received += drain(decoder)
    assert received == payloads
    assert decoder.buffered == 0 and decoder.at_boundary


def test_many_frames_in_one_feed() -> None:
    payloads = [bytes([i]) * i for i in range(50)]
    decoder = FrameDecoder()
    decoder.feed(b"".join(map(encode_frame, payloads)))
    assert decoder.at_boundary
    assert drain(decoder) == payloads


@settings(max_examples=EXAMPLES)
@given(st.data(), st.lists(st.binary(max_size=300), max_size=8))
def test_any_split_gives_back_the_same_frames(data: st.DataObject, payloads: list[bytes]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder()
    received: list[bytes] = []
    for piece in data.draw(splits(stream)):
        decoder.feed(piece)
        received += drain(decoder)
    assert received == payloads
    assert decoder.at_boundary and decoder.buffered == 0


def test_truncated_frame_waits_and_is_not_at_a_boundary() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(b"0123456789")
    decoder.feed(frame[:7])
    assert decoder.next_frame() is NEED_DATA
    assert not decoder.at_boundary and decoder.buffered == 7
    decoder.feed(frame[7:])
    assert decoder.at_boundary  # one complete frame, not yet drained
    assert drain(decoder) == [b"0123456789"]


def test_partial_prefix_is_not_at_a_boundary() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"a") + b"\x00\x00")
    assert not decoder.at_boundary
    assert drain(decoder) == [b"a"]
    assert not decoder.at_boundary and decoder.buffered == 2


def test_4_gib_prefix_is_refused_from_the_prefix_alone_without_allocating() -> None:
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            decoder.feed(b"\xff\xff\xff\xff")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert peak < 64 * 1024
    assert decoder.buffered == 0 and not decoder.at_boundary


def test_oversized_prefix_split_across_feeds_is_refused_when_complete() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\xff\xff")
    decoder.feed(b"\xff")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(b"\xff")
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_frame_just_over_the_limit_is_refused_and_at_the_limit_accepted() -> None:
    decoder = FrameDecoder(SMALL)
    decoder.feed(encode_frame(bytes(100), SMALL))
    assert drain(decoder) == [bytes(100)]
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(struct.pack(">I", 101))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_frames_before_an_oversized_prefix_are_still_delivered() -> None:
    decoder = FrameDecoder(SMALL)
    decoder.feed(encode_frame(b"ok", SMALL) + struct.pack(">I", 10**6))
    assert decoder.next_frame() == b"ok"
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_feeding_behind_an_oversized_prefix_is_refused() -> None:
    decoder = FrameDecoder(SMALL)
    decoder.feed(encode_frame(b"ok", SMALL) + struct.pack(">I", 10**6))
    assert decoder.next_frame() == b"ok"
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(b"more")  # the bad prefix is at the head now: nothing more is buffered
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered == 0


def test_a_broken_decoder_stays_broken() -> None:
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError) as first:
        decoder.feed(b"\xff\xff\xff\xff")
    for call in (decoder.next_frame, lambda: decoder.feed(encode_frame(b"fine"))):
        with pytest.raises(RemoteProtocolError) as again:
            call()
        assert again.value.code is first.value.code
        assert again.value.message == first.value.message


def test_feeding_and_draining_are_linear() -> None:
    # Quadratic buffering (re-copying the rest of the buffer per frame, or bytes concatenation
    # per feed) would take minutes here; the linear implementation takes well under a second.
    small_frames = encode_frame(b"0123456789") * 100_000  # 1.4 MB, 100 000 frames
    decoder = FrameDecoder()
    start = time.perf_counter()
    decoder.feed(small_frames)
    assert len(drain(decoder)) == 100_000
    big = encode_frame(bytes(256 * 1024))
    for i in range(len(big)):
        decoder.feed(big[i : i + 1])
    assert drain(decoder) == [bytes(256 * 1024)]
    assert time.perf_counter() - start < 20


def test_default_limits_are_the_documented_ones() -> None:
    assert DEFAULT_LIMITS.max_frame == 32 * 1024 * 1024
    assert DEFAULT_LIMITS.max_objects == 200_000
    assert DEFAULT_LIMITS.max_depth == 32
    assert DEFAULT_LIMITS.max_str == 4 * 1024 * 1024
    assert DEFAULT_LIMITS.max_bin == 16 * 1024 * 1024
    assert DEFAULT_LIMITS.max_array == 100_000
    assert DEFAULT_LIMITS.max_map == 1_000
    assert DEFAULT_LIMITS.max_batch == 2048
    assert DEFAULT_LIMITS.max_id_len == 64


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, 2**32])
def test_limits_refuse_bad_values(bad: object) -> None:
    with pytest.raises(ConfigError):
        Limits(max_frame=bad)  # type: ignore[arg-type]
