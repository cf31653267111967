"""``/calinode/blob/1.0.0``: serving model blobs to peers without starving jobs.

One request per stream. The request is read under ``REQUEST_TIMEOUT`` with a 4 KB frame cap,
validated into its typed view (``protocol/blobs.py``) and answered with one reply frame:

- a malformed request, or a chunk index outside the model's manifest: ``BAD_REQUEST``,
  counted as ``bad_blob_request``;
- a hash this node does not hold: ``UNKNOWN_MODEL`` (counted the same way: a node only asks
  peers that advertise the model);
- more than ``max_transfers`` transfers at once: ``OVERLOADED`` at once (counted), never queued;
- otherwise the manifest, or the chunk read in a worker thread (a ``CapacityLimiter`` of
  ``max_transfers``), paced by the optional bytes/s cap shared by all transfers.

``corrupt_for_tests`` (``--test-only-corrupt-chunks``) flips a byte of every chunk served, to
test that pullers refetch it elsewhere and report this node.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream

from calinode.node.blobs.catalog import ModelCatalog, read_chunk
from calinode.node.blobs.wire import REPLY_LIMITS, REQUEST_LIMITS, receive_frame, send_frame
from calinode.node.metrics import NodeMetrics
from calinode.node.p2p.host import remote_peer_id
from calinode.node.rejections import RateLimitedLog, Rejections
from calinode.protocol.blobs import BlobRequest, ChunkRequest, error_reply, parse_request
from calinode.protocol.errors import CalinodeError, ErrorCode, RemoteProtocolError

log = logging.getLogger(__name__)
_limited = RateLimitedLog(log)

REQUEST_TIMEOUT = 10.0
REPLY_TIMEOUT = 60.0


class RatePacer:
    """Paces bytes to ``rate`` bytes/s over every transfer together (0: no cap)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._next = 0.0

    async def spend(self, n: int) -> None:
        if self.rate <= 0:
            return
        now = trio.current_time()
        start = max(now, self._next)
        self._next = start + n / self.rate
        await trio.sleep_until(start)


class BlobServer:
    def __init__(self, catalog: ModelCatalog, *, rejections: Rejections,
                 max_transfers: int = 4, rate: int = 0, corrupt_for_tests: bool = False,
                 metrics: NodeMetrics | None = None) -> None:
        self.catalog = catalog
        self.rejections = rejections
        self.max_transfers = max_transfers
        self.slots = trio.Semaphore(max_transfers)
        self.readers = trio.CapacityLimiter(max_transfers)
        self.pacer = RatePacer(rate)
        self.corrupt_for_tests = corrupt_for_tests
        self.metrics = metrics
        self.served_chunks = 0
        self.served_bytes = 0

    async def rpc_blob(self, stream: INetStream) -> None:
        peer = remote_peer_id(stream)
        try:
            try:
                obj = await receive_frame(stream, timeout=REQUEST_TIMEOUT, limits=REQUEST_LIMITS)
            except RemoteProtocolError as exc:
                self.rejections.reject("bad_blob_request", peer, exc.message)
                await stream.reset()
                return
            try:
                request = parse_request(obj)
            except RemoteProtocolError as exc:
                self.rejections.reject("bad_blob_request", peer, exc.message)
                await self._reply(stream, error_reply(ErrorCode.BAD_REQUEST, exc.message))
                return
            try:
                self.slots.acquire_nowait()
            except trio.WouldBlock:
                self.rejections.reject("overloaded", peer, "blob transfers at capacity")
                await self._reply(stream, error_reply(
                    ErrorCode.OVERLOADED, f"at most {self.max_transfers} transfers at once"))
                return
            try:
                await self._reply(stream, await self._answer(peer, request))
            finally:
                self.slots.release()
        except CalinodeError as exc:  # the peer went away or stopped reading: its loss
            _limited.warning(f"blob:{exc.code}", "blob transfer to %s failed: %s", peer[:20],
                             exc.message)
            await _reset(stream)

    async def _answer(self, peer: str, request: BlobRequest) -> dict[str, object]:
        sha256 = request.sha256
        blob = await self.catalog.lookup(sha256)
        if blob is None:
            self.rejections.reject("bad_blob_request", peer, f"unknown model {sha256[:16]}")
            return error_reply(ErrorCode.UNKNOWN_MODEL, f"no model {sha256} here")
        if not isinstance(request, ChunkRequest):
            return {"ok": True, "manifest": blob.transfer.to_wire()}
        transfer = blob.transfer
        try:
            length = transfer.chunk_length(request.file, request.chunk)
        except IndexError:
            self.rejections.reject("bad_blob_request", peer,
                                   f"chunk {request.file}/{request.chunk} out of range")
            return error_reply(ErrorCode.BAD_REQUEST, "no such chunk in this model")
        data = await trio.to_thread.run_sync(
            read_chunk, blob.paths[request.file], request.chunk * transfer.chunk_size, length,
            limiter=self.readers)
        await self.pacer.spend(len(data))
        if self.corrupt_for_tests and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.served_chunks += 1
        self.served_bytes += len(data)
        if self.metrics is not None:
            self.metrics.blob_chunks.labels("served").inc()
        return {"ok": True, "data": data}

    async def _reply(self, stream: INetStream, reply: dict[str, object]) -> None:
        await send_frame(stream, reply, timeout=REPLY_TIMEOUT, limits=REPLY_LIMITS)
        with trio.move_on_after(1):
            try:
                await stream.close()
            except Exception:
                await _reset(stream)


async def _reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:
            log.debug("blob stream reset failed", exc_info=True)
