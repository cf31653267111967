"""Messages over a libp2p stream: frames out, frames in, every read under a deadline.

py-libp2p's ``read(n)`` returns *up to* n bytes, raises ``StreamEOF`` on end of stream, on a
remote crash and on a reset, and has no deadline of its own (a SIGSTOPped peer blocks a reader
forever); this wrapper turns that into protocol messages and calinode errors.
"""

from __future__ import annotations

import math

import trio
from libp2p.abc import INetStream

from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.framing import NEED_DATA
from calinode.protocol.limits import DEFAULT_LIMITS, Limits
from calinode.protocol.messages import Message, MessageDecoder, encode_message

READ_CHUNK = 256 * 1024


class FramedStream:
    def __init__(self, stream: INetStream, limits: Limits = DEFAULT_LIMITS) -> None:
        self.stream = stream
        self.limits = limits
        self._decoder = MessageDecoder(limits)

    async def send(self, message: Message, *, timeout: float) -> None:
        data = encode_message(message, self.limits)
        try:
            with trio.fail_after(max(timeout, 0.001)):
                await self.stream.write(data)
        except trio.TooSlowError:
            raise JobError("timed out writing to the peer", code=ErrorCode.DEADLINE_EXCEEDED) from None
        except (trio.Cancelled, JobError):
            raise
        except Exception as exc:
            raise JobError(f"peer stream broke while writing: {exc!r}", code=ErrorCode.PEER_UNREACHABLE) from exc

    async def receive(self, *, timeout: float) -> Message:
        """The next message; raises ``RemoteProtocolError`` for garbage, ``JobError`` else."""
        deadline = trio.current_time() + max(timeout, 0.001) if math.isfinite(timeout) else math.inf
        while True:
            message = self._decoder.next_message()
            if message is not NEED_DATA:
                return message  # type: ignore[return-value]
            try:
                with trio.fail_at(deadline):
                    data = await self.stream.read(READ_CHUNK)
            except trio.TooSlowError:
                raise JobError("timed out waiting for the peer", code=ErrorCode.DEADLINE_EXCEEDED) from None
            except trio.Cancelled:
                raise
            except Exception as exc:  # StreamEOF, StreamReset, closed muxer...
                raise JobError(f"peer stream ended: {type(exc).__name__}", code=ErrorCode.PEER_UNREACHABLE) from exc
            if not data:
                raise JobError("peer stream ended", code=ErrorCode.PEER_UNREACHABLE)
            self._decoder.feed(data)

    async def close(self) -> None:
        """Half-close: we will write no more; the peer can still answer."""
        with trio.move_on_after(1):
            try:
                await self.stream.close()
            except Exception:
                pass

    async def reset(self) -> None:
        """Abort both directions; safe to call while being cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self.stream.reset()
            except Exception:
                pass
