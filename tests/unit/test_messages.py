"""Messages: validation, wire round-trips through framing and codec, strict parsing."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calinode.protocol import (
    DEFAULT_LIMITS,
    NEED_DATA,
    CapabilityRecord,
    ErrorCode,
    ErrorReply,
    JobError,
    JobRequest,
    JobResponse,
    Limits,
    LocalProtocolError,
    Message,
    MessageDecoder,
    NeedData,
    PeerExchange,
    RemoteProtocolError,
    StreamChunk,
    encode_frame,
    encode_message,
    parse_message,
)
from protocol_strategies import (
    EXAMPLE,
    EXAMPLES,
    MESSAGE_STRATEGIES,
    PEER,
    messages,
    record,
    splits,
)


def decode_all(decoder: MessageDecoder, pieces: list[bytes]) -> list[Message]:
    received: list[Message] = []
    for piece in pieces:
        decoder.feed(piece)
        while not isinstance(message := decoder.next_message(), NeedData):
            received.append(message)
    return received


def remote_error(obj: Any, code: ErrorCode = ErrorCode.BAD_REQUEST) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(obj)
    assert info.value.code is code, info.value
    return info.value.message


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("tag", MESSAGE_STRATEGIES)
@given(data=st.data())
@settings(max_examples=EXAMPLES)
def test_every_message_type_round_trips_through_any_split(tag: str, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES[tag])
    assert message.to_wire()["t"] == tag
    pieces = data.draw(splits(encode_message(message)))
    assert decode_all(MessageDecoder(), pieces) == [message]


@given(st.lists(messages, min_size=1, max_size=4), st.data())
@settings(max_examples=EXAMPLES)
def test_several_messages_in_one_stream(batch: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_message(m) for m in batch)
    assert decode_all(MessageDecoder(), [stream]) == batch
    assert decode_all(MessageDecoder(), data.draw(splits(stream))) == batch


@pytest.mark.parametrize("tag", EXAMPLE)
def test_examples_byte_at_a_time(tag: str) -> None:
    stream = encode_message(EXAMPLE[tag])
    decoder = MessageDecoder()
    assert decode_all(decoder, [bytes([b]) for b in stream]) == [EXAMPLE[tag]]
    assert decoder.at_boundary and decoder.buffered == 0


def test_wire_forms() -> None:
    assert EXAMPLE["req"].to_wire() == {
        "t": "req", "id": "r1", "kind": "embed", "deadline_ms": 5000, "params": {"texts": ["hi"]}
    }
    assert EXAMPLE["err"].to_wire() == {"t": "err", "id": "r1", "code": "OVERLOADED",
                                        "message": "busy"}
    assert EXAMPLE["px"].to_wire()["known"][0]["seq"] == 8
    assert EXAMPLE["rec"].to_wire()["load"] == {"in_flight": 1, "queue_depth": 0}


def test_messages_are_frozen_and_keyword_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXAMPLE["req"].id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        JobRequest("r1", "embed", 5000, {})  # type: ignore[misc]


# --- capability records ---------------------------------------------------------------


def test_signing_payload_is_canonical() -> None:
    a = record(capabilities={"b": 1, "a": {"y": [1, 2], "x": {"q": None, "p": b"\x00"}}})
    b = record(capabilities={"a": {"x": {"p": b"\x00", "q": None}, "y": (1, 2)}, "b": 1})
    assert a.signing_payload() == b.signing_payload()
    assert a.signing_payload() == a.with_signature(b"s" * 64).signing_payload()
    assert a.signing_payload() != record(seq=8).signing_payload()
    payload = msgpack.unpackb(a.signing_payload())
    assert "signature" not in payload and payload["t"] == "rec"
    assert list(payload) == sorted(payload)
    assert list(payload["capabilities"]["a"]["x"]) == ["p", "q"]


@given(MESSAGE_STRATEGIES["rec"])
@settings(max_examples=EXAMPLES)
def test_signing_payload_survives_the_wire(rec: CapabilityRecord) -> None:
    decoder = MessageDecoder()
    [back] = decode_all(decoder, [encode_message(rec)])
    assert isinstance(back, CapabilityRecord)
    assert back.signing_payload() == rec.signing_payload()
    assert back.with_signature(b"x").signature == b"x"


@pytest.mark.parametrize(
    "changes",
    [
        {"peer_id": "not base58 0OIl"},
        {"peer_id": ""},
        {"peer_id": "1" * 129},
        {"public_key": b""},
        {"public_key": bytes(129)},
        {"public_key": "key"},
        {"addrs": ["/ip4/1.2.3.4/tcp/1"]},
        {"addrs": ("a",) * 33},
        {"addrs": ("a" * 257,)},
        {"addrs": ("",)},
        {"version": ""},
        {"protocol_version": 1},
        {"capabilities": {1: "x"}},
        {"capabilities": {"x": {1: "nested int key"}}},
        {"capabilities": {"x": {1, 2}}},
        {"capabilities": {"x": 2**64}},
        {"capabilities": {"x": [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}},
        {"load": {"in_flight": 0, "queue_depth": 0}},
        {"seq": -1},
        {"seq": True},
        {"issued_at_ms": 1.5},
        {"signature": bytes(257)},
    ],
    ids=lambda changes: repr(changes)[:50],
)
def test_bad_records_are_refused_locally(changes: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        record(**changes)
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_peer_exchange_limits() -> None:
    PeerExchange(record=record(), known=(record(),) * 256)
    with pytest.raises(LocalProtocolError):
        PeerExchange(record=record(), known=(record(),) * 257)
    with pytest.raises(LocalProtocolError):
        PeerExchange(record=record(), known=[record()])  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        PeerExchange(record=record().to_wire(), known=())  # type: ignore[arg-type]
    wire = EXAMPLE["px"].to_wire()
    remote_error({**wire, "known": [wire["record"]] * 257})
    remote_error({**wire, "known": [{**wire["record"], "t": "res"}]})
    remote_error({**wire, "known": wire["record"]})


# --- job messages: local validation ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": ""},
        {"id": "x" * 65},
        {"id": 1},
        {"kind": "Embed"},
        {"kind": "1embed"},
        {"kind": "embed\n"},
        {"kind": "e" * 65},
        {"deadline_ms": 0},
        {"deadline_ms": 86_400_001},
        {"deadline_ms": True},
        {"deadline_ms": 1.0},
        {"params": {1: "x"}},
        {"params": [("texts", [])]},
    ],
    ids=repr,
)
def test_bad_job_requests_are_refused_locally(kwargs: dict[str, Any]) -> None:
    fields = {"id": "r1", "kind": "embed", "deadline_ms": 1000, "params": {}, **kwargs}
    with pytest.raises(LocalProtocolError):
        JobRequest(**fields)


def test_job_request_bounds_are_inclusive() -> None:
    JobRequest(id="x" * 64, kind="a" + "b" * 63, deadline_ms=86_400_000, params={})
    JobRequest(id="x", kind="a.b-c_d9", deadline_ms=1, params={})


def test_bad_responses_chunks_and_errors_are_refused_locally() -> None:
    with pytest.raises(LocalProtocolError):
        JobResponse(id="r1", result={}, served_by="peer with spaces")
    with pytest.raises(LocalProtocolError):
        JobResponse(id="r1", result=None, served_by=PEER)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        StreamChunk(id="r1", seq=-1, data={})
    with pytest.raises(LocalProtocolError):
        StreamChunk(id="r1", seq=False, data={})
    with pytest.raises(LocalProtocolError):
        ErrorReply(id="r1", code="BAD_REQUEST", message="x")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        ErrorReply(id="r1", code=ErrorCode.INTERNAL, message="x" * 4097)
    ErrorReply(id="", code=ErrorCode.MALFORMED_FRAME, message="x" * 4096)


def test_error_reply_from_error_truncates_and_to_exception_rebuilds() -> None:
    reply = ErrorReply.from_error("r1", JobError("y" * 5000, code=ErrorCode.UNKNOWN_MODEL))
    assert reply.code is ErrorCode.UNKNOWN_MODEL and len(reply.message) == 4096
    exc = reply.to_exception()
    assert isinstance(exc, JobError) and exc.code is ErrorCode.UNKNOWN_MODEL
    assert exc.message == "y" * 4096


def test_encode_message_refuses_unencodable_contents() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(JobRequest(id="r", kind="k", deadline_ms=1, params={"x": {1, 2}}))
    with pytest.raises(LocalProtocolError):  # a nested non-str key: the peer would refuse it
        encode_message(JobRequest(id="r", kind="k", deadline_ms=1, params={"x": {1: 2}}))
    with pytest.raises(LocalProtocolError) as info:
        encode_message(StreamChunk(id="r", seq=0, data={"x": bytes(200)}), Limits(max_frame=100))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


# --- parsing: only RemoteProtocolError, with the right code ----------------------------


@pytest.mark.parametrize("tag", ["nope", "", "REQ", "req "])
def test_unknown_type_tag(tag: str) -> None:
    remote_error({"t": tag}, ErrorCode.UNKNOWN_KIND)


@pytest.mark.parametrize("obj", [{}, {"t": 1}, {"t": None}, {"t": b"req"}, [], "req"], ids=repr)
def test_missing_or_non_str_type_tag(obj: Any) -> None:
    remote_error(obj)


@pytest.mark.parametrize("tag", EXAMPLE)
def test_every_missing_and_unknown_field_is_refused(tag: str) -> None:
    wire = EXAMPLE[tag].to_wire()
    for name in wire:
        if name != "t":
            assert name in remote_error({k: v for k, v in wire.items() if k != name})
    assert "'extra'" in remote_error({**wire, "extra": 1})


@pytest.mark.parametrize(
    ("tag", "name", "value"),
    [
        ("req", "id", 1),
        ("req", "id", b"r1"),
        ("req", "id", ""),
        ("req", "kind", None),
        ("req", "kind", "UPPER"),
        ("req", "deadline_ms", True),
        ("req", "deadline_ms", False),
        ("req", "deadline_ms", "5000"),
        ("req", "deadline_ms", 5000.0),
        ("req", "deadline_ms", -5),
        ("req", "params", []),
        ("req", "params", None),
        ("res", "result", "ok"),
        ("res", "served_by", 12),
        ("chunk", "seq", True),
        ("chunk", "seq", 2**63),
        ("chunk", "data", [1]),
        ("err", "code", "NOT_A_CODE"),
        ("err", "code", 3),
        ("err", "code", "bad_request"),
        ("err", "message", None),
        ("err", "message", "m" * 4097),
        ("rec", "addrs", "/ip4/1.2.3.4/tcp/1"),
        ("rec", "addrs", [1]),
        ("rec", "load", [0, 0]),
        ("rec", "load", {"in_flight": True, "queue_depth": 0}),
        ("rec", "load", {"in_flight": 0}),
        ("rec", "public_key", "text"),
        ("rec", "signature", None),
        ("rec", "seq", 1.0),
        ("rec", "capabilities", None),
        ("px", "record", None),
        ("px", "record", {"t": "rec"}),
        ("px", "known", None),
        ("px", "known", [None]),
    ],
    ids=repr,
)
def test_wrong_field_types_and_values(tag: str, name: str, value: Any) -> None:
    remote_error({**EXAMPLE[tag].to_wire(), name: value})


def test_stricter_limits_on_parse() -> None:
    wire = {**EXAMPLE["req"].to_wire(), "id": "x" * 20}
    assert isinstance(parse_message(wire), JobRequest)
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(wire, Limits(max_id_len=10))
    assert info.value.code is ErrorCode.BAD_REQUEST


def test_decoder_reports_codec_and_parse_errors_then_stays_broken() -> None:
    decoder = MessageDecoder()
    decoder.feed(encode_frame(msgpack.packb({"t": "zzz"})))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_message()
    assert info.value.code is ErrorCode.UNKNOWN_KIND
    with pytest.raises(RemoteProtocolError):
        decoder.feed(encode_message(EXAMPLE["req"]))
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
    assert not decoder.at_boundary

    decoder = MessageDecoder()
    decoder.feed(encode_frame(b""))
    with pytest.raises(RemoteProtocolError) as info:
        decoder.next_message()
    assert info.value.code is ErrorCode.MALFORMED_FRAME

    decoder = MessageDecoder()
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(b"\xff\xff\xff\xff")
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()


def test_decoder_waits_for_the_rest_of_a_frame() -> None:
    stream = encode_message(EXAMPLE["px"])
    decoder = MessageDecoder(DEFAULT_LIMITS)
    decoder.feed(stream[:-1])
    assert decoder.next_message() is NEED_DATA
    assert not decoder.at_boundary and decoder.buffered == len(stream) - 1
    decoder.feed(stream[-1:])
    assert decoder.next_message() == EXAMPLE["px"]


# --- parsing property: valid maps with fields dropped, added or replaced ---------------


# Field values that are valid somewhere: a receiver meets them in the wrong place too.
VALID_WIRE = [message.to_wire() for message in EXAMPLE.values()]
VALID_VALUES = [value for wire in VALID_WIRE for value in wire.values()]
FIELD_NAMES = sorted({name for wire in VALID_WIRE for name in wire} - {"t"})
field_values = (
    st.sampled_from(VALID_VALUES)
    | st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.lists(st.integers(), max_size=3)
)


@st.composite
def message_like_maps(draw: st.DrawFn) -> dict[str, Any]:
    """A valid wire map with fields removed, added or replaced, and maybe another tag."""
    obj = dict(draw(st.sampled_from(VALID_WIRE)))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELD_NAMES))
        if draw(st.booleans()):
            obj[name] = draw(field_values)
        else:
            obj.pop(name, None)
    if draw(st.integers(0, 9)) == 0:
        obj["t"] = draw(st.sampled_from([*EXAMPLE, "zz", None, 1]))
    return obj


@given(message_like_maps())
@settings(max_examples=max(EXAMPLES, settings().max_examples // 5))
def test_parse_message_on_message_like_maps(obj: dict[str, Any]) -> None:
    try:
        message = parse_message(obj)
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_KIND)
    else:
        assert parse_message(message.to_wire()) == message
