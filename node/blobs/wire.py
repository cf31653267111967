"""One msgpack frame each way over a blob stream, every read and write under a deadline.

py-libp2p's ``read(n)`` returns up to ``n`` bytes and has no deadline of its own (a stopped peer
blocks a reader forever): frames are reassembled with :class:`FrameDecoder` inside
``trio.fail_at``. Failures become ``JobError`` (``DEADLINE_EXCEEDED``, ``PEER_UNREACHABLE``) or
``RemoteProtocolError`` (garbage), as on the job protocol.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INetStream

from calinode.protocol.codec import pack, unpack
from calinode.protocol.errors import ErrorCode, JobError
from calinode.protocol.framing import NEED_DATA, FrameDecoder, encode_frame
from calinode.protocol.limits import Limits

#: A request is a small map: anything bigger is refused at its length prefix.
REQUEST_LIMITS = Limits(max_frame=4096, max_objects=32, max_str=256, max_bin=16)
#: A reply carries one chunk (<= 4 MiB) or a manifest (<= 32768 chunk hashes, ~2.4 MB).
REPLY_LIMITS = Limits(max_frame=8 * 1024 * 1024, max_objects=40_000, max_bin=4 * 1024 * 1024)
READ_CHUNK = 256 * 1024


async def send_frame(stream: INetStream, obj: dict[str, Any], *, timeout: float,
                     limits: Limits) -> None:
    data = encode_frame(pack(obj, limits=limits), limits)
    try:
        with trio.fail_after(timeout):
            await stream.write(data)
    except trio.TooSlowError:
        raise JobError("timed out writing to the peer", code=ErrorCode.DEADLINE_EXCEEDED) from None
    except trio.Cancelled:
        raise
    except Exception as exc:
        raise JobError(f"peer stream broke while writing: {type(exc).__name__}",
                       code=ErrorCode.PEER_UNREACHABLE) from exc


async def receive_frame(stream: INetStream, *, timeout: float, limits: Limits) -> dict[str, Any]:
    """The next frame's map; ``RemoteProtocolError`` for garbage or an oversize length."""
    decoder = FrameDecoder(limits)
    deadline = trio.current_time() + timeout
    while True:
        frame = decoder.next_frame()
        if frame is not NEED_DATA:
            assert isinstance(frame, bytes)
            return unpack(frame, limits)
        try:
            with trio.fail_at(deadline):
                data = await stream.read(READ_CHUNK)
        except trio.TooSlowError:
            raise JobError("timed out waiting for the peer",
                           code=ErrorCode.DEADLINE_EXCEEDED) from None
        except trio.Cancelled:
            raise
        except Exception as exc:  # StreamEOF, StreamReset, a closed muxer
            raise JobError(f"peer stream ended: {type(exc).__name__}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc
        if not data:
            raise JobError("peer stream ended", code=ErrorCode.PEER_UNREACHABLE)
        decoder.feed(bytes(data))
