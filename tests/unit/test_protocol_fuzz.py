"""Fuzzing the receiving side: whatever a peer sends, only RemoteProtocolError comes out.

Every property here runs the Hypothesis profile's number of examples: 10 000 in CI
(``CI=true``), 500 locally (see ``tests/conftest.py``).  Any exception other than
:class:`~calinode.protocol.errors.RemoteProtocolError` fails the test, and so does a
``RemoteProtocolError`` with a code that a receiver cannot produce.  The strategies are kept
cheap (fixed corpora, chunk sizes instead of arbitrary cut lists) so that 10 000 examples of
each take seconds, not minutes.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from calinode.protocol import (
    CapabilityRecord,
    ErrorCode,
    ErrorReply,
    JobRequest,
    JobResponse,
    Message,
    MessageDecoder,
    NeedData,
    PeerExchange,
    RemoteProtocolError,
    StreamChunk,
    encode_frame,
    encode_message,
)
from protocol_strategies import EXAMPLE, chunked

RECEIVER_CODES = {
    ErrorCode.FRAME_TOO_LARGE,
    ErrorCode.MALFORMED_FRAME,
    ErrorCode.BAD_REQUEST,
    ErrorCode.UNKNOWN_KIND,
}
MESSAGE_TYPES = (JobRequest, JobResponse, StreamChunk, ErrorReply, CapabilityRecord, PeerExchange)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
chunk_sizes = st.integers(1, 300)


def receive(pieces: list[bytes]) -> list[Message]:
    """Feed ``pieces`` to a fresh decoder; the messages it produced before an error, if any."""
    decoder = MessageDecoder()
    received: list[Message] = []
    try:
        for piece in pieces:
            decoder.feed(piece)
            while not isinstance(message := decoder.next_message(), NeedData):
                assert isinstance(message, MESSAGE_TYPES)
                received.append(message)
    except RemoteProtocolError as exc:
        assert exc.code in RECEIVER_CODES, exc
    return received


@FUZZ
@given(st.binary(max_size=1024), chunk_sizes)
@example(b"\xff\xff\xff\xff", 1)
@example(b"\x00\x00\x00\x00", 4)
@example(b"\x00\x00\x00\x01\xc1", 5)
def test_arbitrary_bytes(data: bytes, size: int) -> None:
    receive(chunked(data, size))


# Payload starts that get past the first checks (a map, a "t" key, a known tag).
PAYLOAD_STARTS = [
    b"", b"\x81", b"\x82\xa1t", b"\x85\xa1t\xa3req\xa2id", b"\x84\xa1t\xa2px", b"\xde"
]


@FUZZ
@given(st.sampled_from(PAYLOAD_STARTS), st.binary(max_size=512))
def test_arbitrary_payloads_in_well_formed_frames(start: bytes, rest: bytes) -> None:
    receive([encode_frame(start + rest)])


FIELDS = sorted(
    {name for message in EXAMPLE.values() for name in message.to_wire()}
    | {"in_flight", "queue_depth", "dtype", "shape", "data"}
)
EXAMPLE_TAGS = [*EXAMPLE, "zz"]
WORDS = [*EXAMPLE, *FIELDS, "BAD_REQUEST", "<f4", "embed", ""]


class ValueBuilder:
    """Reads fuzz bytes as a tiny grammar of msgpack-encodable values.

    Hypothesis draws (and shrinks) one byte string; this turns it into nested lists, maps with
    str, int and bytes keys, ext types, message type tags, extreme ints and floats.  Much faster
    than a recursive Hypothesis strategy, so 10 000 examples stay cheap.
    """

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def byte(self) -> int:
        self.pos += 1
        return self.blob[self.pos - 1] if self.pos <= len(self.blob) else 0

    def take(self, size: int) -> bytes:
        self.pos += size
        return self.blob[self.pos - size : self.pos]

    def value(self, depth: int = 0) -> Any:
        op = self.byte() % (13 if depth < 6 else 9)
        if op == 0:
            return None
        if op == 1:
            return bool(self.byte() & 1)
        if op == 2:
            return self.byte() - 128
        if op == 3:
            return int.from_bytes(self.take(8).ljust(8, b"\0"), "big", signed=self.byte() & 1 == 1)
        if op == 4:
            return struct.unpack(">d", self.take(8).ljust(8, b"\0"))[0]
        if op == 5:
            return self.take(self.byte() % 12).decode("utf-8", "replace")
        if op == 6:
            return self.take(self.byte() % 12)
        if op == 7:
            return WORDS[self.byte() % len(WORDS)]
        if op == 8:
            return msgpack.ExtType(self.byte() % 128, self.take(self.byte() % 5))
        if op in (9, 10):
            return [self.value(depth + 1) for _ in range(self.byte() % 5)]
        return {self.key(op): self.value(depth + 1) for _ in range(self.byte() % 5)}

    def message(self) -> Any:
        """Mostly maps with a "t" and real field names, whose values are anything."""
        mode = self.byte() % 8
        if mode == 0:
            return self.value()
        obj = {"t": EXAMPLE_TAGS[self.byte() % len(EXAMPLE_TAGS)] if mode > 1 else self.value()}
        for _ in range(self.byte() % 10):
            name = FIELDS[self.byte() % len(FIELDS)] if self.byte() % 4 else self.value(9)
            obj[name] = self.value(1)
        return obj

    def key(self, op: int) -> Any:
        if op == 11:  # a map with str keys, often real field names
            return WORDS[self.byte() % len(WORDS)] if self.byte() & 1 else self.value(9)
        return self.value(9)  # anything hashable: scalars only at this depth


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_msgpack_objects(blob: bytes) -> None:
    obj = ValueBuilder(blob).message()
    receive([encode_frame(msgpack.packb(obj, use_bin_type=True))])


VALID_STREAMS = [encode_message(message) for message in EXAMPLE.values()] + [
    b"".join(encode_message(message) for message in EXAMPLE.values())
]


SPECIAL_BYTES = [0x00, 0x7F, 0x80, 0xC1, 0xC4, 0xD4, 0xDD, 0xFF]


def mutate(stream: bytes, edits: bytes) -> bytes:
    """Apply the edits encoded in ``edits``, 3 bytes each: where (2 bytes), what (1 byte).

    What: flip one bit, overwrite with a special byte, insert bytes, delete bytes, or cut off
    the rest.  Reading edits from one drawn byte string keeps the property fast to generate
    and easy to shrink.
    """
    out = bytearray(stream)
    for k in range(0, len(edits) - 2, 3):
        where = int.from_bytes(edits[k : k + 2], "big") % (len(out) + 1)
        action, arg = divmod(edits[k + 2], 64)
        if action == 0 and where < len(out):
            out[where] ^= 1 << (arg % 8)
        elif action == 1 and where < len(out):
            out[where] = SPECIAL_BYTES[arg % len(SPECIAL_BYTES)]
        elif action == 2:
            out[where:where] = edits[: 1 + arg % 8]
        elif arg % 2:
            del out[where : where + 1 + arg % 8]
        else:
            del out[where:]
    return bytes(out)


@FUZZ
@given(st.sampled_from(VALID_STREAMS), st.binary(min_size=3, max_size=15), chunk_sizes)
def test_mutated_valid_frames(stream: bytes, edits: bytes, size: int) -> None:
    receive(chunked(mutate(stream, edits), size))


def test_unmutated_corpus_decodes() -> None:
    assert receive([VALID_STREAMS[-1]]) == list(EXAMPLE.values())
