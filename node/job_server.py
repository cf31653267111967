"""The job server on ``/calinode/job/1.0.0``: one job per stream.

A caller opens a stream, sends one ``JobRequest`` and half-closes; the server answers with
zero or more ``StreamChunk`` messages and then exactly one ``JobResponse`` or ``ErrorReply``.
Each job is isolated: bad frames, unknown kinds, handler bugs and expired deadlines become an
error reply with a stable code, and never touch other jobs or the node.

Admission is non-blocking: a peer with ``max_per_peer`` jobs in flight, or a node with
``max_total``, gets ``OVERLOADED`` at once so the caller can go elsewhere.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import INetStream

from calinode.node.framed_stream import FramedStream
from calinode.node.host import remote_peer_id
from calinode.protocol.errors import CalinodeError, ErrorCode, JobError, ProtocolError
from calinode.protocol.limits import DEFAULT_LIMITS, Limits
from calinode.protocol.messages import ErrorReply, JobRequest, JobResponse, StreamChunk

log = logging.getLogger(__name__)

REQUEST_READ_TIMEOUT = 10.0
REPLY_WRITE_TIMEOUT = 10.0
UNKNOWN_ID = "-"


@dataclass
class JobContext:
    """What a job handler knows about the job it runs."""

    job_id: str
    kind: str
    caller: str  # peer id of the caller (this node's own id for local calls)
    deadline: float  # trio time
    emit: Callable[[dict[str, Any]], Awaitable[None]]

    def remaining(self) -> float:
        return max(0.0, self.deadline - trio.current_time())


JobHandler = Callable[[JobContext, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class JobRegistry:
    """Job kinds this node serves, by name."""

    handlers: dict[str, JobHandler] = field(default_factory=dict)

    def register(self, kind: str, handler: JobHandler) -> None:
        if kind in self.handlers:
            raise ValueError(f"job kind {kind!r} registered twice")
        self.handlers[kind] = handler

    def get(self, kind: str) -> JobHandler:
        try:
            return self.handlers[kind]
        except KeyError:
            known = ", ".join(sorted(self.handlers)) or "none"
            raise JobError(f"unknown job kind {kind!r} (this node serves: {known})",
                           code=ErrorCode.UNKNOWN_KIND) from None

    def kinds(self) -> list[str]:
        return sorted(self.handlers)


@dataclass(frozen=True)
class JobServerStats:
    in_flight: int
    served: int
    failed: int
    rejected_overloaded: int
    bad_frames: int


class JobServer:
    def __init__(
        self,
        registry: JobRegistry,
        *,
        peer_id: str,
        max_total: int,
        max_per_peer: int,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.registry = registry
        self.peer_id = peer_id
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.limits = limits
        self._per_peer: Counter[str] = Counter()
        self._in_flight = 0
        self._served = 0
        self._failed = 0
        self._overloaded = 0
        self._bad_frames = 0

    def statistics(self) -> JobServerStats:
        return JobServerStats(self._in_flight, self._served, self._failed,
                              self._overloaded, self._bad_frames)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _admit(self, caller: str) -> None:
        if self._in_flight >= self.max_total or self._per_peer[caller] >= self.max_per_peer:
            self._overloaded += 1
            raise JobError(
                f"node {self.peer_id} is at its job limit ({self._in_flight} in flight); "
                "retry later or on another peer",
                code=ErrorCode.OVERLOADED,
            )
        self._in_flight += 1
        self._per_peer[caller] += 1

    def _release(self, caller: str) -> None:
        self._in_flight -= 1
        self._per_peer[caller] -= 1
        if self._per_peer[caller] <= 0:
            del self._per_peer[caller]

    async def execute(
        self,
        request: JobRequest,
        caller: str,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        """Run one job under admission control and its deadline; raise JobError on failure."""
        handler = self.registry.get(request.kind)
        self._admit(caller)
        try:
            deadline = trio.current_time() + request.deadline_ms / 1000
            ctx = JobContext(request.id, request.kind, caller, deadline, emit)
            with trio.move_on_at(deadline) as scope:
                return await handler(ctx, request.params)
            assert scope.cancelled_caught
            raise JobError(
                f"job {request.kind} did not finish within {request.deadline_ms} ms",
                code=ErrorCode.DEADLINE_EXCEEDED,
            )
        except CalinodeError:
            raise
        except Exception as exc:
            log.exception("job %s (%s) from %s failed", request.id, request.kind, caller)
            raise JobError(f"job {request.kind} failed inside the node: {type(exc).__name__}",
                           code=ErrorCode.INTERNAL) from exc
        finally:
            self._release(caller)

    async def rpc_job(self, stream: INetStream) -> None:
        """Stream handler for ``JOB_PROTOCOL`` (install it behind ``host.guarded``)."""
        caller = remote_peer_id(stream)
        channel = FramedStream(stream, self.limits)
        job_id = UNKNOWN_ID
        try:
            request = await channel.receive(timeout=REQUEST_READ_TIMEOUT)
            if not isinstance(request, JobRequest):
                raise JobError(f"expected a job request, got {type(request).__name__}",
                               code=ErrorCode.BAD_REQUEST)
            job_id = request.id
            seq = 0

            async def emit(data: dict[str, Any]) -> None:
                nonlocal seq
                chunk = StreamChunk(id=job_id, seq=seq, data=data)
                seq += 1
                await channel.send(chunk, timeout=REPLY_WRITE_TIMEOUT)

            result = await self.execute(request, caller, emit)
            await channel.send(JobResponse(id=job_id, result=result, served_by=self.peer_id),
                               timeout=REPLY_WRITE_TIMEOUT)
            self._served += 1
            await channel.finish()
        except ProtocolError as exc:
            self._bad_frames += 1
            log.warning("bad frame from %s: %s", caller, exc)
            await self._reply_error(channel, job_id, exc)
        except JobError as exc:
            self._failed += 1
            if exc.code in (ErrorCode.PEER_UNREACHABLE,):
                await channel.reset()
                return
            await self._reply_error(channel, job_id, exc)

    async def _reply_error(self, channel: FramedStream, job_id: str, exc: CalinodeError) -> None:
        try:
            await channel.send(ErrorReply.from_error(job_id, exc), timeout=REPLY_WRITE_TIMEOUT)
            await channel.finish()
        except CalinodeError:
            await channel.reset()
