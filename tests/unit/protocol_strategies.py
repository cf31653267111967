"""Hypothesis strategies for calinode.protocol tests: valid messages, wire values, byte splits."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from calinode.protocol import (
    DEFAULT_LIMITS,
    CapabilityRecord,
    ErrorCode,
    ErrorReply,
    JobRequest,
    JobResponse,
    Load,
    Message,
    PeerExchange,
    StreamChunk,
)

#: Examples for properties that are not fuzz tests (50 with the "dev" profile, 100 with "ci"): the
#: profile's count is for the fuzz tests, and round trips of rich messages cost far more each.
EXAMPLES = max(50, settings().max_examples // 100)

BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
MAX_INT64 = 2**63 - 1

ids = st.text(min_size=1, max_size=DEFAULT_LIMITS.max_id_len)
kinds = st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)
peer_ids = st.text(BASE58_ALPHABET, min_size=1, max_size=128)
keys = st.text(max_size=12)

#: Anything msgpack round-trips exactly (lists, not tuples; no NaN, which is not equal to itself).
wire_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=12,
)
str_maps = st.dictionaries(keys, wire_values, max_size=6)

loads = st.builds(
    Load, in_flight=st.integers(0, MAX_INT64), queue_depth=st.integers(0, MAX_INT64)
)

job_requests = st.builds(
    JobRequest,
    id=ids,
    kind=kinds,
    deadline_ms=st.integers(1, 86_400_000),
    params=str_maps,
)
job_responses = st.builds(JobResponse, id=ids, result=str_maps, served_by=peer_ids)
stream_chunks = st.builds(StreamChunk, id=ids, seq=st.integers(0, MAX_INT64), data=str_maps)
error_replies = st.builds(
    ErrorReply,
    id=st.text(max_size=DEFAULT_LIMITS.max_id_len),
    code=st.sampled_from(ErrorCode),
    message=st.text(max_size=300),
)
capability_records = st.builds(
    CapabilityRecord,
    peer_id=peer_ids,
    public_key=st.binary(min_size=1, max_size=128),
    addrs=st.lists(st.text(min_size=1, max_size=80), max_size=4).map(tuple),
    version=st.text(min_size=1, max_size=16),
    protocol_version=st.text(min_size=1, max_size=16),
    capabilities=str_maps,
    load=loads,
    seq=st.integers(0, MAX_INT64),
    issued_at_ms=st.integers(0, MAX_INT64),
    signature=st.binary(max_size=256),
)
peer_exchanges = st.builds(
    PeerExchange,
    record=capability_records,
    known=st.lists(capability_records, max_size=3).map(tuple),
)

#: One strategy per message type, keyed by wire tag.
MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    "req": job_requests,
    "res": job_responses,
    "chunk": stream_chunks,
    "err": error_replies,
    "rec": capability_records,
    "px": peer_exchanges,
}
messages: st.SearchStrategy[Message] = st.one_of(*MESSAGE_STRATEGIES.values())


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut into pieces of random sizes (empty pieces included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunked(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of ``size`` bytes (a cheap split for the fuzz tests)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# --- one hand-written example of every message type ----------------------------------

PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def record(**changes: Any) -> CapabilityRecord:
    fields: dict[str, Any] = {
        "peer_id": PEER,
        "public_key": b"\x08\x01\x12\x20" + bytes(32),
        "addrs": ("/ip4/127.0.0.1/tcp/7411",),
        "version": "0.1.0",
        "protocol_version": "1.0.0",
        "capabilities": {"models": [{"name": "minilm-l6-int8", "dim": 384}], "shards": []},
        "load": Load(in_flight=1, queue_depth=0),
        "seq": 7,
        "issued_at_ms": 1_700_000_000_000,
    }
    return CapabilityRecord(**{**fields, **changes})


EXAMPLE: dict[str, Message] = {
    "req": JobRequest(id="r1", kind="embed", deadline_ms=5000, params={"texts": ["hi"]}),
    "res": JobResponse(id="r1", result={"vectors": {"dtype": "<f4"}}, served_by=PEER),
    "chunk": StreamChunk(id="r1", seq=0, data={"text": "Hel"}),
    "err": ErrorReply(id="r1", code=ErrorCode.OVERLOADED, message="busy"),
    "rec": record(signature=b"sig"),
    "px": PeerExchange(record=record(), known=(record(seq=8),)),
}
