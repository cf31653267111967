"""The messages of the calinode wire protocol, and turning them into frames and back.

Every message is a frozen, keyword-only dataclass validated when it is built, whose wire form
(``to_wire()``) is a msgpack map tagged with ``"t"``:

=====  =====================  ==========================================================
t      type                   meaning
=====  =====================  ==========================================================
req    :class:`JobRequest`    run job ``kind`` with ``params`` within ``deadline_ms``
res    :class:`JobResponse`   the result of request ``id``, and who computed it
chunk  :class:`StreamChunk`   one piece of a streamed result (generated tokens), in order
err    :class:`ErrorReply`    request ``id`` failed with a stable :class:`ErrorCode`
rec    CapabilityRecord       a node's signed self-description (records.py)
px     PeerExchange           heartbeat: the sender's record and the records it knows
=====  =====================  ==========================================================

:func:`parse_message` turns a decoded map back into a message, raising only
:class:`~calinode.protocol.errors.RemoteProtocolError`: ``UNKNOWN_KIND`` for an unknown ``"t"``,
``BAD_REQUEST`` for anything else (missing or unknown fields, wrong types, values out of range).
:func:`encode_message` and :class:`MessageDecoder` add the codec and the framing::

    wire_bytes = encode_message(JobRequest(id="r1", kind="embed", deadline_ms=5000, params={}))
    decoder = MessageDecoder()
    decoder.feed(wire_bytes)
    request = decoder.next_message()        # a JobRequest, or NEED_DATA

Constructors check ids against ``DEFAULT_LIMITS.max_id_len``; a receiver may pass stricter
:class:`~calinode.protocol.limits.Limits` to :func:`parse_message`, never looser ones.  ``params``,
``result`` and ``data`` must be str-keyed maps; their contents belong to each job kind.  The
dicts inside a message are not copied: treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

from .codec import pack, unpack
from .errors import CalinodeError, ErrorCode, JobError, RemoteProtocolError
from .framing import NEED_DATA, FrameDecoder, NeedData, encode_frame
from .limits import DEFAULT_LIMITS, Limits
from .records import CapabilityRecord, Load, PeerExchange
from .validation import (
    BASE58,
    JOB_KIND,
    MAX_INT64,
    check_instance,
    check_int,
    check_str,
    check_str_map,
    from_peer,
    wire_fields,
)

__all__ = [
    "MAX_DEADLINE_MS",
    "MAX_ERROR_MESSAGE",
    "CapabilityRecord",
    "ErrorReply",
    "JobRequest",
    "JobResponse",
    "Load",
    "Message",
    "MessageDecoder",
    "PeerExchange",
    "StreamChunk",
    "encode_message",
    "parse_message",
]

#: Longest relative deadline a request may carry: one day.
MAX_DEADLINE_MS: Final = 86_400_000
#: Longest error message, in characters.
MAX_ERROR_MESSAGE: Final = 4096
_MAX_KIND_LEN: Final = 64
_MAX_PEER_ID_LEN: Final = 128
_ERROR_CODES: Final = {code.value: code for code in ErrorCode}


def _check_id(value: object, *, allow_empty: bool = False) -> None:
    check_str("id", value, min_len=0 if allow_empty else 1, max_len=DEFAULT_LIMITS.max_id_len)


@dataclass(frozen=True, kw_only=True, slots=True)
class JobRequest:
    """Ask a peer to run job ``kind`` (``embed``, ``retrieve``, ``generate``...)."""

    TAG: ClassVar[str] = "req"

    #: Chosen by the sender, unique among its requests in flight (1..max_id_len characters).
    id: str
    #: ``[a-z][a-z0-9_.-]*``, at most 64 characters.
    kind: str
    #: Budget the sender allows, in milliseconds from when it *sent* the request (relative, so
    #: that peers need no synchronized clocks): 1..86 400 000.
    deadline_ms: int
    #: Arguments of the job, validated by the job kind.
    params: dict[str, Any]

    def __post_init__(self) -> None:
        _check_id(self.id)
        check_str("kind", self.kind, max_len=_MAX_KIND_LEN, pattern=JOB_KIND)
        check_int("deadline_ms", self.deadline_ms, lo=1, hi=MAX_DEADLINE_MS)
        check_str_map("params", self.params)

    def to_wire(self) -> dict[str, Any]:
        return {
            "t": self.TAG,
            "id": self.id,
            "kind": self.kind,
            "deadline_ms": self.deadline_ms,
            "params": self.params,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class JobResponse:
    """The final result of request ``id``."""

    TAG: ClassVar[str] = "res"

    id: str
    result: dict[str, Any]
    #: Peer id (base58) of the node that ran the job.
    served_by: str

    def __post_init__(self) -> None:
        _check_id(self.id)
        check_str_map("result", self.result)
        check_str("served_by", self.served_by, max_len=_MAX_PEER_ID_LEN, pattern=BASE58)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TAG, "id": self.id, "result": self.result, "served_by": self.served_by}


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamChunk:
    """Piece number ``seq`` (0, 1, 2...) of the streamed result of request ``id``."""

    TAG: ClassVar[str] = "chunk"

    id: str
    seq: int
    data: dict[str, Any]

    def __post_init__(self) -> None:
        _check_id(self.id)
        check_int("seq", self.seq, lo=0, hi=MAX_INT64)
        check_str_map("data", self.data)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TAG, "id": self.id, "seq": self.seq, "data": self.data}


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorReply:
    """Request ``id`` failed.

    ``id`` may be empty when the error concerns no identifiable request (for example a frame
    that could not be decoded).  ``message`` is at most 4096 characters: the constructor refuses
    longer ones, :meth:`from_error` truncates them.
    """

    TAG: ClassVar[str] = "err"

    id: str
    code: ErrorCode
    message: str

    def __post_init__(self) -> None:
        _check_id(self.id, allow_empty=True)
        check_instance("code", self.code, ErrorCode)
        check_str("message", self.message, min_len=0, max_len=MAX_ERROR_MESSAGE)

    def to_wire(self) -> dict[str, Any]:
        return {"t": self.TAG, "id": self.id, "code": self.code.value, "message": self.message}

    @classmethod
    def from_error(cls, id: str, exc: CalinodeError) -> ErrorReply:
        """The reply reporting ``exc`` (its code, and its message cut to 4096 characters)."""
        return cls(id=id, code=exc.code, message=exc.message[:MAX_ERROR_MESSAGE])

    def to_exception(self) -> JobError:
        """The :class:`~calinode.protocol.errors.JobError` to raise on the requesting side."""
        return JobError(self.message, code=self.code)


Message: TypeAlias = (
    JobRequest | JobResponse | StreamChunk | ErrorReply | CapabilityRecord | PeerExchange
)


def _parse_job_message(
    cls: type[JobRequest | JobResponse | StreamChunk], obj: dict[str, Any]
) -> Message:
    fields = wire_fields(obj, cls, cls.TAG)
    with from_peer():
        return cls(**fields)


def _parse_error(obj: dict[str, Any]) -> ErrorReply:
    fields = wire_fields(obj, ErrorReply, ErrorReply.TAG)
    code = fields["code"]
    if not isinstance(code, str) or code not in _ERROR_CODES:
        raise RemoteProtocolError(f"unknown error code {code!r}", code=ErrorCode.BAD_REQUEST)
    fields["code"] = _ERROR_CODES[code]
    with from_peer():
        return ErrorReply(**fields)


def parse_message(obj: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> Message:
    """The message a decoded wire map stands for.

    Raises :class:`~calinode.protocol.errors.RemoteProtocolError` and nothing else.
    """
    if not isinstance(obj, dict):
        raise RemoteProtocolError(
            f"a message must be a map, not {type(obj).__name__}", code=ErrorCode.BAD_REQUEST
        )
    tag = obj.get("t")
    message: Message
    if tag == JobRequest.TAG:
        message = _parse_job_message(JobRequest, obj)
    elif tag == JobResponse.TAG:
        message = _parse_job_message(JobResponse, obj)
    elif tag == StreamChunk.TAG:
        message = _parse_job_message(StreamChunk, obj)
    elif tag == ErrorReply.TAG:
        message = _parse_error(obj)
    elif tag == CapabilityRecord.TAG:
        message = CapabilityRecord.from_wire(obj, limits)
    elif tag == PeerExchange.TAG:
        message = PeerExchange.from_wire(obj, limits)
    elif isinstance(tag, str):
        raise RemoteProtocolError(f"unknown message type t={tag!r}", code=ErrorCode.UNKNOWN_KIND)
    else:
        raise RemoteProtocolError(
            f"a message needs a str type tag t, got {type(tag).__name__}",
            code=ErrorCode.BAD_REQUEST,
        )
    if isinstance(message, JobRequest | JobResponse | StreamChunk | ErrorReply) and (
        len(message.id) > limits.max_id_len
    ):
        raise RemoteProtocolError(
            f"id of {len(message.id)} characters exceeds max_id_len={limits.max_id_len}",
            code=ErrorCode.BAD_REQUEST,
        )
    return message


def encode_message(msg: Message, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The frame carrying ``msg``.

    Raises :class:`~calinode.protocol.errors.LocalProtocolError` when ``msg`` cannot be encoded
    or would break ``limits`` (a peer with those limits would refuse it).
    """
    return encode_frame(pack(msg.to_wire(), limits=limits), limits)


class MessageDecoder:
    """Messages from a byte stream cut at arbitrary places (a :class:`FrameDecoder` plus codec).

    Like the frame decoder, it is broken for good after the first error, even one in an
    otherwise well-framed message: the caller answers with an :class:`ErrorReply` and closes
    the stream.
    """

    __slots__ = ("_error", "_frames", "_limits")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._frames = FrameDecoder(limits)
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return self._frames.buffered

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (the stream may end cleanly here)."""
        return self._error is None and self._frames.at_boundary

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer (see :meth:`FrameDecoder.feed`)."""
        self._raise_if_broken()
        try:
            self._frames.feed(data)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def next_message(self) -> Message | NeedData:
        """The next complete message, or :data:`NEED_DATA`."""
        self._raise_if_broken()
        try:
            frame = self._frames.next_frame()
            if isinstance(frame, NeedData):
                return NEED_DATA
            return parse_message(unpack(frame, self._limits), self._limits)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(self._error.message, code=self._error.code)
