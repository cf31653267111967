"""The job server on ``/calinode/job/1.0.0``: one job per stream.

A caller opens a stream, sends one ``JobRequest`` and half-closes; the server answers with
zero or more ``StreamChunk`` messages and then exactly one ``JobResponse`` or ``ErrorReply``.
Each job is isolated: bad frames, unknown kinds, handler bugs and expired deadlines become an
error reply with a stable code, and never touch other jobs or the node.

Admission is non-blocking and comes before the request is read: a peer with ``max_per_peer``
jobs in flight, or a node with ``max_total``, or a request frame over the byte budget (per
peer and in total, charged from its length prefix), gets ``OVERLOADED`` at once so the caller
can go elsewhere (see ``admission.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import INetStream

from calinode.node.jobs.activity import JobActivity
from calinode.node.jobs.admission import AdmissionTicket, JobAdmission
from calinode.node.metrics import OTHER_KIND, NodeMetrics
from calinode.node.p2p.framed_stream import FramedStream
from calinode.node.p2p.host import remote_peer_id
from calinode.node.rejections import RateLimitedLog, Rejections
from calinode.protocol.errors import (
    BadRequest,
    CalinodeError,
    ErrorCode,
    JobError,
    LocalProtocolError,
    ProtocolError,
    groups_collapsed,
)
from calinode.protocol.framing import PREFIX_SIZE
from calinode.protocol.ids import JOB_PROTOCOL
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
    rejections: Rejections | None = None

    def remaining(self) -> float:
        return max(0.0, self.deadline - trio.current_time())

    def reject(self, reason: str, detail: str) -> None:
        """Count this job's request as refused input of the caller (see ``node/rejections.py``)."""
        if self.rejections is not None:
            self.rejections.reject(reason, self.caller, f"{self.kind}: {detail}")


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
    bytes_in_flight: int = 0


#: Request bytes in flight a peer may hold: two frames of the largest size, plus slack.
def default_bytes_per_peer(limits: Limits) -> int:
    return 2 * (limits.max_frame + PREFIX_SIZE) + 1024 * 1024


#: Request bytes in flight for the whole node: four frames of the largest size.
def default_bytes_total(limits: Limits) -> int:
    return 4 * (limits.max_frame + PREFIX_SIZE)


#: A refused stream is drained (and its bytes dropped) up to this much so that a caller which
#: already sent a small request reads the OVERLOADED reply; larger requests get a reset.
REFUSED_DRAIN_BYTES = 64 * 1024
REFUSED_DRAIN_GRACE = 1.0


class JobServer:
    """Serves ``JOB_PROTOCOL`` streams under admission control (see ``admission.py``).

    Every refusal a peer can cause is counted in ``rejections`` (``bad_frame``,
    ``bad_params``, ``overloaded``) with a rate-limited log line; a handler bug logs its
    traceback at most once per job kind every ``rejections.log.interval`` seconds.
    """

    def __init__(
        self,
        registry: JobRegistry,
        *,
        peer_id: str,
        max_total: int,
        max_per_peer: int,
        limits: Limits = DEFAULT_LIMITS,
        rejections: Rejections | None = None,
        max_bytes_per_peer: int | None = None,
        max_bytes_total: int | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.peer_id = peer_id
        self.max_total = max_total
        self.max_per_peer = max_per_peer
        self.limits = limits
        self.rejections = rejections if rejections is not None else Rejections()
        #: the node's metrics: jobs by kind, hop and outcome (``node/metrics.py``)
        self.metrics = metrics if metrics is not None else NodeMetrics()
        self.admission = JobAdmission(
            max_total=max_total, max_per_peer=max_per_peer,
            max_bytes_total=max_bytes_total or default_bytes_total(limits),
            max_bytes_per_peer=max_bytes_per_peer or default_bytes_per_peer(limits))
        self._bugs = RateLimitedLog(log, interval=self.rejections.log.interval)
        self._served = 0
        self._failed = 0
        self._overloaded = 0
        self._bad_frames = 0
        #: per-kind counters of the jobs run here (the dashboard's ``/v1/activity``)
        self.activity = JobActivity()

    def statistics(self) -> JobServerStats:
        return JobServerStats(self.admission.in_flight, self._served, self._failed,
                              self._overloaded, self._bad_frames,
                              self.admission.bytes_in_flight)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def _overloaded_error(self, caller: str, what: str) -> JobError:
        self._overloaded += 1
        self.rejections.reject("overloaded", caller, what)
        self.metrics.job_done(OTHER_KIND, local=caller == self.peer_id, code=ErrorCode.OVERLOADED)
        return JobError(
            f"node {self.peer_id} is at its job limit ({what}); retry later or on another peer",
            code=ErrorCode.OVERLOADED)

    def _admit(self, caller: str) -> AdmissionTicket:
        ticket = self.admission.admit(caller)
        if ticket is None:
            raise self._overloaded_error(
                caller, f"{self.admission.in_flight} jobs in flight, "
                f"{self.admission.slots_of(caller)} of them from this peer")
        return ticket

    def _charge(self, ticket: AdmissionTicket, size: int) -> None:
        if not self.admission.charge(ticket, size):
            raise self._overloaded_error(
                ticket.caller, f"a request of {size} bytes is over the request byte budget "
                f"({self.admission.bytes_in_flight} bytes in flight)")

    async def execute(
        self,
        request: JobRequest,
        caller: str,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        """Run one local job under admission control and its deadline; raise JobError."""
        self.registry.get(request.kind)
        ticket = self._admit(caller)
        try:
            return await self._run(request, caller, emit)
        finally:
            self.admission.release(ticket)

    async def _run(
        self,
        request: JobRequest,
        caller: str,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        """Run the job's handler and count its outcome once, in both of the node's tallies:
        the metrics (served, or failed with its code) and :attr:`activity`, the dashboard's
        counters. A job cancelled from outside (its caller's stream closed, the node
        stopping) has no outcome and counts in neither, so the two never disagree."""
        local = caller == self.peer_id
        started = trio.current_time()
        try:
            result = await self._run_handler(request, caller, emit)
        except JobError as exc:
            self._count(request.kind, local, started, None, exc.code)
            raise
        self._count(request.kind, local, started, result, None)
        return result

    def _count(self, kind: str, local: bool, started: float,
               result: dict[str, Any] | None, code: ErrorCode | None) -> None:
        self.metrics.job_done(kind, local=local, code=code)
        self.activity.record(kind, trio.current_time() - started, result)

    async def _run_handler(
        self,
        request: JobRequest,
        caller: str,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> dict[str, Any]:
        handler = self.registry.get(request.kind)
        try:
            deadline = trio.current_time() + request.deadline_ms / 1000
            ctx = JobContext(request.id, request.kind, caller, deadline, emit, self.rejections)
            with trio.move_on_at(deadline) as scope, groups_collapsed():
                return await handler(ctx, request.params)
            assert scope.cancelled_caught
            raise JobError(
                f"job {request.kind} did not finish within {request.deadline_ms} ms",
                code=ErrorCode.DEADLINE_EXCEEDED,
            )
        except ProtocolError as exc:  # a params view refused the request
            self.rejections.reject("bad_params", caller, f"{request.kind}: {exc.message}")
            raise JobError(f"{request.kind}: {exc.message}", code=exc.code) from None
        except JobError:
            raise
        except CalinodeError as exc:
            if exc.code is ErrorCode.INTERNAL and exc.__cause__ is not None:  # a collapsed bug
                self._bugs.exception(f"bug:{request.kind}", "job %s (%s) from %s failed",
                                     request.id, request.kind, caller)
            # any other member of the tree (ConfigError, RecordError, ...) keeps its code: the
            # caller must see it, not a stream closed without a reply (PEER_UNREACHABLE)
            raise JobError(f"{request.kind}: {exc.message}", code=exc.code) from exc
        except Exception as exc:
            self._bugs.exception(f"bug:{request.kind}", "job %s (%s) from %s failed",
                                 request.id, request.kind, caller)
            raise JobError(f"job {request.kind} failed inside the node: {type(exc).__name__}",
                           code=ErrorCode.INTERNAL) from exc

    async def rpc_job(self, stream: INetStream) -> None:
        """Stream handler for ``JOB_PROTOCOL`` (install it behind ``host.guarded``).

        The stream takes its admission slot before anything is read, and the request frame
        is charged to the byte budget from its length prefix, before its body is read.
        """
        caller = remote_peer_id(stream)
        channel = FramedStream(stream, self.limits, meter=self.metrics.traffic(JOB_PROTOCOL))
        job_id = UNKNOWN_ID
        try:
            ticket = self._admit(caller)
        except JobError as exc:
            await self._refuse(channel, exc)
            return
        released = False
        try:
            request = await channel.receive(timeout=REQUEST_READ_TIMEOUT,
                                            charge=lambda size: self._charge(ticket, size))
            if not isinstance(request, JobRequest):
                raise BadRequest(f"expected a job request, got {type(request).__name__}")
            job_id = request.id
            seq = 0

            async def emit(data: dict[str, Any]) -> None:
                nonlocal seq
                chunk = StreamChunk(id=job_id, seq=seq, data=data)
                seq += 1
                await channel.send(chunk, timeout=REPLY_WRITE_TIMEOUT)

            result = await self._run(request, caller, emit)
            await channel.send(JobResponse(id=job_id, result=result, served_by=self.peer_id),
                               timeout=REPLY_WRITE_TIMEOUT)
            self._served += 1
            self.admission.release(ticket)  # the job is over: only the stream's close is left
            released = True
            await channel.finish()
        except LocalProtocolError as exc:  # our reply broke a limit (e.g. too large): not
            self._failed += 1               # the peer's fault, so not counted against it
            await self._reply_error(channel, job_id, exc)
        except ProtocolError as exc:
            self._bad_frames += 1
            self.rejections.reject("bad_frame", caller, str(exc))
            self.metrics.job_done(OTHER_KIND, local=False, code=exc.code)
            await self._reply_error(channel, job_id, exc)
        except JobError as exc:
            self._failed += 1
            if exc.code is ErrorCode.PEER_UNREACHABLE:
                await channel.reset()
                return
            if exc.code is ErrorCode.OVERLOADED and job_id == UNKNOWN_ID:
                await self._refuse(channel, exc)  # the body was never read
                return
            await self._reply_error(channel, job_id, exc)
        finally:
            if not released:
                self.admission.release(ticket)

    async def _refuse(self, channel: FramedStream, exc: JobError) -> None:
        """Answer a stream refused before its request was read, then release the stream."""
        try:
            await channel.send(ErrorReply.from_error(UNKNOWN_ID, exc), timeout=1.0)
            await channel.close()
        except CalinodeError:
            await channel.reset()
            return
        if not await channel.discard(max_bytes=REFUSED_DRAIN_BYTES, grace=REFUSED_DRAIN_GRACE):
            await channel.reset()

    async def _reply_error(self, channel: FramedStream, job_id: str, exc: CalinodeError) -> None:
        try:
            await channel.send(ErrorReply.from_error(job_id, exc), timeout=REPLY_WRITE_TIMEOUT)
            await channel.finish()
        except CalinodeError:
            await channel.reset()
