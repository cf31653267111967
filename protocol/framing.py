"""Length-prefixed framing: a 4-byte big-endian unsigned length, then that many payload bytes.

::

    +--------+--------+--------+--------+=================+
    |   payload length (uint32, BE)     |  payload bytes  |
    +--------+--------+--------+--------+=================+

No I/O here (h11 style): :func:`encode_frame` turns a payload into bytes to write, and a
:class:`FrameDecoder` is fed whatever bytes the transport produced and hands back whole payloads::

    decoder = FrameDecoder()
    decoder.feed(chunk)                 # any size, any split
    while (frame := decoder.next_frame()) is not NEED_DATA:
        handle(frame)

Guarantees:

- a length prefix over ``Limits.max_frame`` raises
  :class:`~calinode.protocol.errors.RemoteProtocolError` (``FRAME_TOO_LARGE``) as soon as its
  four bytes are at the head of the buffer: from the :meth:`FrameDecoder.feed` that completes
  it, or, when complete frames are still waiting in front of it, from the
  :meth:`FrameDecoder.next_frame` call after the last of them (so they are still delivered).
  Either way the decoder never buffers toward a frame it will refuse;
- after an error the decoder is broken for good: every later ``feed``/``next_frame`` raises the
  same error (the byte stream can no longer be trusted to be aligned on frames);
- feeding and draining are linear in the number of bytes, whatever the chunk sizes: bytes live
  in one ``bytearray`` read from an offset, and consumed bytes are dropped in bulk.

A zero-length frame is valid at this layer: ``next_frame`` returns ``b""``.  An empty payload is
not a valid msgpack message, so :func:`~calinode.protocol.codec.unpack` (and therefore
:class:`~calinode.protocol.messages.MessageDecoder`) rejects it with ``MALFORMED_FRAME``.
"""

from __future__ import annotations

from typing import Final, NoReturn, final

from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .limits import DEFAULT_LIMITS, Limits

__all__ = ["NEED_DATA", "PREFIX_SIZE", "FrameDecoder", "NeedData", "encode_frame"]

#: Bytes in the length prefix.
PREFIX_SIZE: Final = 4

# Consumed bytes are dropped from the buffer once there are at least this many of them and they
# make up at least half of it, so every byte is moved at most a constant number of times.
_COMPACT_AT: Final = 64 * 1024


@final
class NeedData:
    """Type of :data:`NEED_DATA`: "feed me more bytes before asking again"."""

    __slots__ = ()
    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


#: The one :class:`NeedData` instance; compare with ``is``.
NEED_DATA: Final = NeedData()


def encode_frame(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Prefix ``payload`` with its length.

    Raises :class:`~calinode.protocol.errors.LocalProtocolError` (``FRAME_TOO_LARGE``) when the
    payload is longer than ``limits.max_frame``: a peer with the same limits would refuse it.
    """
    size = len(payload)
    if size > limits.max_frame:
        raise LocalProtocolError(
            f"frame of {size} bytes exceeds max_frame={limits.max_frame}",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    return size.to_bytes(PREFIX_SIZE, "big") + bytes(payload)


class FrameDecoder:
    """Reassembles frames from a byte stream cut at arbitrary places."""

    __slots__ = ("_buf", "_error", "_limits", "_pos")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered.

        That is, the buffer holds zero or more *complete* frames and nothing else, so the stream
        may end here cleanly.  A broken decoder is never at a boundary.
        """
        if self._error is not None:
            return False
        buf, pos, end = self._buf, self._pos, len(self._buf)
        while pos < end:
            if end - pos < PREFIX_SIZE:
                return False
            pos += PREFIX_SIZE + int.from_bytes(buf[pos : pos + PREFIX_SIZE], "big")
        return pos == end

    def feed(self, data: bytes) -> None:
        """Append bytes received from the peer.

        Raises :class:`~calinode.protocol.errors.RemoteProtocolError` when the frame at the head
        of the buffer announces a length over the limit, or when the decoder is already broken.
        """
        self._raise_if_broken()
        self._check_head()  # an oversized prefix already at the head: refuse before buffering
        self._buf += data
        self._check_head()

    def next_frame(self) -> bytes | NeedData:
        """Return the next complete payload, or :data:`NEED_DATA` if it is not all here yet."""
        self._raise_if_broken()
        length = self._check_head()
        if length is None:
            return NEED_DATA
        start = self._pos + PREFIX_SIZE
        end = start + length
        if end > len(self._buf):
            return NEED_DATA
        with memoryview(self._buf) as view, view[start:end] as payload:
            frame = bytes(payload)  # one copy, no intermediate bytearray
        self._pos = end
        self._compact()
        return frame

    def _check_head(self) -> int | None:
        """Length of the frame at the head of the buffer (None if its prefix is incomplete)."""
        pos = self._pos
        if len(self._buf) - pos < PREFIX_SIZE:
            return None
        length = int.from_bytes(self._buf[pos : pos + PREFIX_SIZE], "big")
        if length > self._limits.max_frame:
            self._break(
                RemoteProtocolError(
                    f"peer announced a frame of {length} bytes, over max_frame="
                    f"{self._limits.max_frame}",
                    code=ErrorCode.FRAME_TOO_LARGE,
                )
            )
        return length

    def _compact(self) -> None:
        pos = self._pos
        if pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif pos >= _COMPACT_AT and pos * 2 >= len(self._buf):
            del self._buf[:pos]
            self._pos = 0

    def _break(self, error: RemoteProtocolError) -> NoReturn:
        self._error = error
        self._buf = bytearray()  # nothing left in it will ever be decoded: free it now
        self._pos = 0
        raise error

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            # A fresh exception each time, so tracebacks do not pile up on one object.
            raise RemoteProtocolError(self._error.message, code=self._error.code)
