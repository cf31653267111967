"""Messages over a libp2p stream: frames out, frames in, every read under a deadline.

py-libp2p's ``read(n)`` returns *up to* n bytes, raises ``StreamEOF`` on end of stream, on a
remote crash and on a reset, and has no deadline of its own (a SIGSTOPped peer blocks a reader
forever); this wrapper turns that into protocol messages and calinode errors. With a
``meter`` (``node/metrics.py``), the bytes it reads and writes are counted for its protocol.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from libp2p.abc import INetStream

from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.framing import PREFIX_SIZE, NeedData
from calinode.protocol.limits import DEFAULT_LIMITS, Limits
from calinode.protocol.messages import Message, MessageDecoder, encode_message

if TYPE_CHECKING:
    from calinode.node.metrics import ByteMeter

READ_CHUNK = 256 * 1024


class FramedStream:
    def __init__(self, stream: INetStream, limits: Limits = DEFAULT_LIMITS, *,
                 meter: ByteMeter | None = None) -> None:
        self.stream = stream
        self.limits = limits
        self.meter = meter
        self._decoder = MessageDecoder(limits)

    async def send(self, message: Message, *, timeout: float) -> None:
        data = encode_message(message, self.limits)
        try:
            with trio.fail_after(max(timeout, 0.001)):
                await self.stream.write(data)
            if self.meter is not None:
                self.meter.sent(len(data))
        except trio.TooSlowError:
            raise JobError("timed out writing to the peer",
                           code=ErrorCode.DEADLINE_EXCEEDED) from None
        except (trio.Cancelled, JobError):
            raise
        except Exception as exc:
            raise JobError(f"peer stream broke while writing: {exc!r}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc

    async def receive(self, *, timeout: float,
                      charge: Callable[[int], None] | None = None) -> Message:
        """The next message; raises ``RemoteProtocolError`` for garbage, ``JobError`` else.

        With ``charge`` (only for the first message of a stream), the four bytes of the
        frame's length prefix are read alone and ``charge(frame size)`` is called before a
        byte of the body is read: it raises (``OVERLOADED``) to refuse a frame the node has
        no budget for, and the body then stays unread in the peer's flow-control window.
        """
        deadline = trio.current_time() + max(timeout, 0.001) if math.isfinite(timeout) else math.inf
        if charge is not None:
            head = b""
            while len(head) < PREFIX_SIZE:  # read(n) returns at most n bytes
                head += await self._read(PREFIX_SIZE - len(head), deadline)
            self._decoder.feed(head)  # an announced length over max_frame is refused here
            charge(PREFIX_SIZE + int.from_bytes(head, "big"))
        while True:
            message = self._decoder.next_message()
            if not isinstance(message, NeedData):
                return message
            self._decoder.feed(await self._read(READ_CHUNK, deadline))

    async def _read(self, n: int, deadline: float) -> bytes:
        try:
            with trio.fail_at(deadline):
                data = await self.stream.read(n)
        except trio.TooSlowError:
            raise JobError("timed out waiting for the peer",
                           code=ErrorCode.DEADLINE_EXCEEDED) from None
        except trio.Cancelled:
            raise
        except Exception as exc:  # StreamEOF, StreamReset, closed muxer...
            raise JobError(f"peer stream ended: {type(exc).__name__}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc
        if not data:
            raise JobError("peer stream ended", code=ErrorCode.PEER_UNREACHABLE)
        if self.meter is not None:
            self.meter.received(len(data))
        return bytes(data)

    async def discard(self, *, max_bytes: int, grace: float) -> bool:
        """Read and drop up to ``max_bytes`` until the peer's end of stream (True if reached
        within ``grace`` seconds): lets a refused caller that already sent a small request
        see our reply before the stream is released, without buffering anything."""
        seen = 0
        with trio.move_on_after(grace):
            while seen < max_bytes:
                try:
                    data = await self.stream.read(min(READ_CHUNK, max_bytes - seen))
                except Exception:  # StreamEOF: the peer is done
                    return True
                if not data:
                    return True
                seen += len(data)
        return False

    async def close(self) -> None:
        """Half-close: we will write no more; the peer can still answer."""
        with trio.move_on_after(1), contextlib.suppress(Exception):
            await self.stream.close()

    async def finish(self, *, grace: float = 1.0) -> None:
        """Half-close after the last reply and make sure the stream is released.

        A well-behaved peer has already half-closed, so its end of stream is read at once. A
        peer that keeps its side open (or sends more) would pin a stream slot, and py-libp2p
        queues new streams behind held slots, so it gets a reset after ``grace`` seconds.
        """
        await self.close()
        with trio.move_on_after(grace):
            try:
                extra = await self.stream.read(1)
            except Exception:  # StreamEOF: the peer is done too
                return
            if not extra:
                return
        await self.reset()

    async def reset(self) -> None:
        """Abort both directions; safe to call while being cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
            await self.stream.reset()
