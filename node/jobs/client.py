"""Sending jobs to peers (or to this node itself) with a deadline.

``JobClient.call`` opens one stream per job, sends the request with the *remaining* budget as
its relative deadline, half-closes, then reads chunks until the response or an error reply.
Every failure becomes a :class:`JobError` with a stable code; nothing blocks past the deadline.

``JobClient.call_parsed`` also parses the reply into its typed view: a reply that does not fit
(missing keys, NaN scores, wrong counts) is counted as ``bad_reply`` against the peer and
raised as one clean ``JobError`` (``INTERNAL``), which callers treat as one failed peer.

py-libp2p reuses an existing connection for every new stream, and keeps a connection whose
other end is gone (a peer restarted, a socket dropped without a FIN, a pipe broken under a
flood) until something reads from it and fails: a stream opened on it fails (broken pipe) or
hangs in protocol negotiation until py-libp2p's 10 s limit. :func:`open_stream` therefore
closes the peer's connections when opening a stream on one of them fails, and dials once more.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from calinode.node.jobs.server import JobServer
from calinode.node.p2p.framed_stream import FramedStream
from calinode.node.p2p.host import peer_id_from_str
from calinode.protocol.errors import ErrorCode, JobError, ProtocolError, RemoteProtocolError
from calinode.protocol.ids import JOB_PROTOCOL
from calinode.protocol.limits import DEFAULT_LIMITS, Limits
from calinode.protocol.messages import ErrorReply, JobRequest, JobResponse, StreamChunk

ChunkCallback = Callable[[dict[str, Any]], Awaitable[None]]
V = TypeVar("V")
#: Parses a reply's ``result`` map into its typed view (``protocol/job_replies.py``).
ReplyParser = Callable[[dict[str, Any]], V]

log = logging.getLogger(__name__)

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_job_id() -> str:
    return f"{_prefix}-{next(_ids)}"


@dataclass(frozen=True)
class JobResult:
    result: dict[str, Any]
    served_by: str
    elapsed_ms: float


async def _ignore_chunk(_: dict[str, Any]) -> None:
    return None


async def open_stream(host: IHost, peer: ID, protocol: str) -> INetStream:
    """A new stream to ``peer``; if it fails on an existing connection, that connection is
    presumed broken (module docstring): the peer's connections are closed and the stream is
    opened once more, on a fresh dial. A failure then (or of a fresh dial) is raised."""
    network = host.get_network()
    reused = bool(network.get_connections(peer))
    try:
        return await host.new_stream(peer, [TProtocol(protocol)])
    except (trio.Cancelled, trio.TooSlowError):
        raise
    except Exception as exc:
        if not reused:
            raise
        log.debug("stream to %s failed on an existing connection (%r); redialling", peer, exc)
    with trio.move_on_after(5):
        await network.close_peer(peer)
    return await host.new_stream(peer, [TProtocol(protocol)])


class JobClient:
    def __init__(self, host: IHost, server: JobServer, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.host = host
        self.server = server
        self.self_id = server.peer_id
        self.limits = limits
        #: the node's metrics (the server's): every job sent is timed, by kind and hop
        self.metrics = server.metrics

    async def call(
        self,
        peer_id: str,
        kind: str,
        params: dict[str, Any],
        *,
        timeout: float,
        on_chunk: ChunkCallback | None = None,
    ) -> JobResult:
        """Run job ``kind`` on ``peer_id`` (this node itself included) within ``timeout``;
        raise ``JobError``. Timed in ``calinode_job_duration_seconds``, answered or not."""
        started = trio.current_time()
        try:
            return await self._call(peer_id, kind, params, timeout=timeout, on_chunk=on_chunk)
        finally:
            self.metrics.job_sent(kind, local=peer_id == self.self_id,
                                  seconds=trio.current_time() - started)

    async def _call(
        self,
        peer_id: str,
        kind: str,
        params: dict[str, Any],
        *,
        timeout: float,
        on_chunk: ChunkCallback | None = None,
    ) -> JobResult:
        started = trio.current_time()
        deadline = started + timeout
        emit = on_chunk or _ignore_chunk
        request = JobRequest(
            id=new_job_id(), kind=kind, deadline_ms=max(1, int(timeout * 1000)), params=params
        )
        if peer_id == self.self_id:
            result = await self.server.execute(request, self.self_id, emit)
            return JobResult(result, self.self_id, (trio.current_time() - started) * 1000)
        try:
            with trio.fail_at(deadline):
                result, served_by = await self._call_remote(peer_id, request, deadline, emit)
        except trio.TooSlowError:
            raise JobError(f"{kind} on {peer_id} did not answer within {timeout:.1f} s",
                           code=ErrorCode.DEADLINE_EXCEEDED) from None
        return JobResult(result, served_by, (trio.current_time() - started) * 1000)

    async def call_parsed(
        self,
        peer_id: str,
        kind: str,
        params: dict[str, Any],
        parse: ReplyParser[V],
        *,
        timeout: float,
        on_chunk: ChunkCallback | None = None,
    ) -> tuple[V, JobResult]:
        """:meth:`call`, then the reply's typed view (see the module docstring)."""
        result = await self.call(peer_id, kind, params, timeout=timeout, on_chunk=on_chunk)
        return self.parse_reply(peer_id, result, kind, parse), result

    def parse_reply(self, peer_id: str, result: JobResult, kind: str,
                    parse: ReplyParser[V]) -> V:
        """The typed view of ``peer_id``'s reply, or a counted ``bad_reply`` JobError."""
        try:
            return parse(result.result)
        except ProtocolError as exc:
            self.server.rejections.reject("bad_reply", peer_id, f"{kind}: {exc.message}")
            raise JobError(f"{peer_id} sent an invalid {kind} reply: {exc.message}",
                           code=ErrorCode.INTERNAL) from None

    async def _call_remote(
        self, peer_id: str, request: JobRequest, deadline: float, emit: ChunkCallback
    ) -> tuple[dict[str, Any], str]:
        try:
            stream = await open_stream(self.host, peer_id_from_str(peer_id), JOB_PROTOCOL)
        except (trio.Cancelled, trio.TooSlowError):
            raise
        except Exception as exc:
            raise JobError(f"cannot open a job stream to {peer_id}: {exc}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc
        channel = FramedStream(stream, self.limits, meter=self.metrics.traffic(JOB_PROTOCOL))
        try:
            # the request goes out with what is left of the budget at the moment of sending
            remaining_ms = max(1, int((deadline - trio.current_time()) * 1000))
            request = JobRequest(id=request.id, kind=request.kind, deadline_ms=remaining_ms,
                                 params=request.params)
            await channel.send(request, timeout=deadline - trio.current_time())
            await channel.close()
            while True:
                message = await channel.receive(timeout=deadline - trio.current_time())
                if isinstance(message, StreamChunk) and message.id == request.id:
                    await emit(message.data)
                elif isinstance(message, JobResponse) and message.id == request.id:
                    return message.result, message.served_by
                elif isinstance(message, ErrorReply):
                    raise message.to_exception()
                else:
                    raise RemoteProtocolError(  # a broken peer: one unreachable candidate
                        f"{peer_id} answered with an unexpected {type(message).__name__}")
        except ProtocolError as exc:
            await channel.reset()
            raise JobError(f"{peer_id} sent a malformed reply: {exc.message}",
                           code=ErrorCode.PEER_UNREACHABLE) from exc
        except BaseException:
            await channel.reset()
            raise
