"""Pull a model from the peers that hold it: chunks from several peers at once, each verified
on arrival, resumable, installed only once every whole file checks.

1. The transfer manifest is asked of every candidate peer; it must be for the requested
   sha256, and its model manifest text must list exactly its files (path, size, sha256): the
   first valid one is used, and only peers that send the same manifest serve chunks (so chunk
   indexes and hashes mean the same thing for all of them).
2. The pull's :class:`PartialFolder` is opened: chunks verified by an earlier, interrupted pull
   of the same manifest are re-hashed and kept; only the rest are fetched.
3. ``STREAMS_PER_PEER`` workers per peer take chunks from one queue. A chunk whose length or
   sha256 is wrong goes back to the queue and its sender is faulty (counted as ``bad_chunk``,
   reported in the result, used no more); a chunk that fails in transit or is refused
   (``OVERLOADED``) goes back to the queue too; a peer failing three times in a row (or
   refusing as busy for about a minute) is dropped.
4. The model is installed through :meth:`ModelRegistry.install`, which copies and re-hashes
   every file: a check refuses it unless every whole-file sha256 and size is the manifest's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID

from calinode.models.manifest import ModelManifest
from calinode.models.registry import ModelRegistry
from calinode.node.blobs.pull_state import ChunkBook, ChunkId, PartialFolder
from calinode.node.blobs.wire import REPLY_LIMITS, REQUEST_LIMITS, receive_frame, send_frame
from calinode.node.jobs.client import open_stream
from calinode.node.metrics import NodeMetrics
from calinode.node.rejections import Rejections
from calinode.protocol.blobs import (
    BLOB_PROTOCOL,
    ChunkRequest,
    ManifestRequest,
    TransferManifest,
    parse_chunk_reply,
    parse_manifest_reply,
)
from calinode.protocol.errors import CalinodeError, ConfigError, ErrorCode, JobError

log = logging.getLogger(__name__)

STREAMS_PER_PEER = 2
MANIFEST_TIMEOUT = 60.0  # the first request makes the peer hash the model (seconds for GBs)
CHUNK_TIMEOUT = 60.0
RETRY_PAUSE = 0.5

#: Called with (verified bytes, total bytes) as chunks arrive.
Progress = Callable[[int, int], None]


def _quiet(_done: int, _total: int) -> None:
    return None


@dataclass
class PullResult:
    name: str
    sha256: str
    size: int
    #: bytes fetched over the network this time (resumed bytes are not)
    fetched_bytes: int
    resumed_bytes: int
    peers: list[str]
    #: peers that sent a chunk failing its hash, and how many
    faulty_peers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    already_installed: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "size": self.size,
                "fetched_bytes": self.fetched_bytes, "resumed_bytes": self.resumed_bytes,
                "peers": self.peers, "faulty_peers": self.faulty_peers,
                "seconds": round(self.seconds, 3), "already_installed": self.already_installed}


def model_manifest_of(transfer: TransferManifest) -> ModelManifest:
    """The model manifest a transfer carries, checked to list exactly its files."""
    try:
        manifest = ModelManifest.from_json(transfer.model)
    except ConfigError as exc:
        raise JobError(f"the peer's model manifest is unreadable: {exc.message}",
                       code=ErrorCode.BAD_REQUEST) from None
    listed = [(f.path, f.size, f.sha256) for f in manifest.files]
    sent = [(f.path, f.size, f.sha256) for f in transfer.files]
    if listed != sent or manifest.sha256 != transfer.sha256:
        raise JobError("the peer's model manifest does not list the files it sends",
                       code=ErrorCode.BAD_REQUEST)
    return manifest


async def _ask(host: IHost, peer: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    stream = await open_stream(host, ID.from_base58(peer), BLOB_PROTOCOL)
    try:
        await send_frame(stream, request, timeout=timeout, limits=REQUEST_LIMITS)
        with trio.move_on_after(1):
            await stream.close()
        return await receive_frame(stream, timeout=timeout, limits=REPLY_LIMITS)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await stream.reset()
            except Exception:
                log.debug("blob stream reset failed", exc_info=True)


async def fetch_manifest(host: IHost, peer: str, sha256: str) -> TransferManifest:
    with trio.fail_after(MANIFEST_TIMEOUT + 5):
        reply = await _ask(host, peer, ManifestRequest(sha256=sha256).to_wire(),
                           MANIFEST_TIMEOUT)
    transfer = parse_manifest_reply(reply, sha256)
    model_manifest_of(transfer)
    return transfer


async def fetch_chunk(host: IHost, peer: str, transfer: TransferManifest,
                      chunk: ChunkId) -> bytes:
    f, c = chunk
    with trio.fail_after(CHUNK_TIMEOUT + 5):
        reply = await _ask(host, peer, ChunkRequest(sha256=transfer.sha256, file=f,
                                                    chunk=c).to_wire(), CHUNK_TIMEOUT)
    return parse_chunk_reply(reply, transfer.chunk_length(f, c))


class Pull:
    """One pull in progress (see the module docstring)."""

    def __init__(self, host: IHost, registry: ModelRegistry, sha256: str, *,
                 rejections: Rejections, metrics: NodeMetrics | None = None,
                 progress: Progress = _quiet) -> None:
        self.host = host
        self.registry = registry
        self.sha256 = sha256
        self.rejections = rejections
        self.metrics = metrics
        self.progress = progress
        self.book: ChunkBook | None = None

    async def run(self, peers: Sequence[str]) -> PullResult:
        started = time.monotonic()
        transfer, sources = await self._agree(peers)
        manifest = model_manifest_of(transfer)
        folder = PartialFolder(self.registry.root, self.sha256)
        verified = await trio.to_thread.run_sync(folder.open, transfer)
        book = self.book = ChunkBook.start(transfer, verified)
        if verified:
            log.info("resuming the pull of %s: %d of %d chunks already verified",
                     manifest.name, len(verified), transfer.total_chunks)
        self.progress(book.verified_bytes, transfer.size)
        while not book.done:
            usable = [p for p in sources if book.usable(p)]
            if not usable:
                raise JobError(f"no peer could send every chunk of {manifest.name} "
                               f"(faulty: {sorted(book.faulty)}, unreachable: "
                               f"{sorted(book.dropped)})", code=ErrorCode.PEER_UNREACHABLE)
            async with trio.open_nursery() as nursery:
                for peer in usable:
                    for _ in range(STREAMS_PER_PEER):
                        nursery.start_soon(self._worker, peer, folder, book)
        await trio.to_thread.run_sync(self._install, manifest, folder)
        await trio.to_thread.run_sync(folder.remove)
        return PullResult(name=manifest.name, sha256=self.sha256, size=transfer.size,
                          fetched_bytes=book.fetched_bytes, resumed_bytes=book.resumed_bytes,
                          peers=list(sources), faulty_peers=dict(+book.faulty),
                          seconds=time.monotonic() - started)

    async def _agree(self, peers: Sequence[str]) -> tuple[TransferManifest, list[str]]:
        """The transfer manifest, and the peers that sent that same one."""
        answers: dict[str, TransferManifest] = {}
        errors: list[str] = []

        async def ask(peer: str) -> None:
            try:
                answers[peer] = await fetch_manifest(self.host, peer, self.sha256)
            except CalinodeError as exc:
                if exc.code == ErrorCode.BAD_REQUEST:
                    self.rejections.reject("bad_reply", peer, f"blob manifest: {exc.message}")
                errors.append(f"{peer[:16]}: {exc}")
            except (trio.TooSlowError, Exception) as exc:  # a dial that failed
                errors.append(f"{peer[:16]}: {type(exc).__name__}")

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        if not answers:
            raise JobError(f"no peer sent the manifest of model {self.sha256[:16]}: "
                           f"{'; '.join(errors) or 'no peer holds it'}",
                           code=ErrorCode.NO_CAPABLE_PEER)
        first = next(answers[p] for p in peers if p in answers)
        return first, [p for p in peers if answers.get(p) == first]

    async def _worker(self, peer: str, folder: PartialFolder, book: ChunkBook) -> None:
        transfer = book.transfer
        while book.usable(peer) and (chunk := book.take()) is not None:
            try:
                data = await fetch_chunk(self.host, peer, transfer, chunk)
            except trio.Cancelled:
                book.pending.appendleft(chunk)
                raise
            except CalinodeError as exc:
                book.failed(chunk, peer, busy=exc.code == ErrorCode.OVERLOADED)
                if exc.code not in (ErrorCode.OVERLOADED, ErrorCode.DEADLINE_EXCEEDED,
                                    ErrorCode.PEER_UNREACHABLE):
                    self.rejections.reject("bad_reply", peer, f"blob chunk: {exc.message}")
                await trio.sleep(RETRY_PAUSE)
                continue
            except Exception as exc:  # a dial or stream failure below our wrappers
                log.debug("chunk %s from %s failed: %r", chunk, peer, exc)
                book.failed(chunk, peer)
                await trio.sleep(RETRY_PAUSE)
                continue
            if not book.check(chunk, data):
                book.corrupt(chunk, peer)
                self.rejections.reject("bad_chunk", peer, f"chunk {chunk[0]}/{chunk[1]} of "
                                       f"{transfer.sha256[:16]} fails its sha256")
                if self.metrics is not None:
                    self.metrics.blob_chunks.labels("corrupt").inc()
                return
            await trio.to_thread.run_sync(folder.write, transfer, chunk, data)
            book.arrived(chunk, peer, len(data))
            if self.metrics is not None:
                self.metrics.blob_chunks.labels("fetched").inc()
            self.progress(book.verified_bytes, transfer.size)

    def _install(self, manifest: ModelManifest, folder: PartialFolder) -> None:
        expected = [(f.path, f.size, f.sha256) for f in manifest.files]

        def whole_files_check(final: ModelManifest, _staging: object) -> None:
            got = [(f.path, f.size, f.sha256) for f in final.files]
            if got != expected:
                folder.remove()  # every chunk checked but the whole does not: start over
                raise JobError(f"pulled files of {manifest.name} fail their whole-file "
                               "sha256; the pull starts over next time",
                               code=ErrorCode.BAD_REQUEST)

        self.registry.install(manifest, [(folder.part(i), item.path)
                                         for i, item in enumerate(manifest.files)],
                              check=whole_files_check)
