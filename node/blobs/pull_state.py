"""The bookkeeping of one pull: which chunks are verified, which are pending, who lied.

:class:`ChunkBook` is pure: chunks go out to peers, come back verified (or corrupt: the chunk
goes back to the queue and the sender is faulty and used no more), or fail in transit (back to
the queue; a peer failing ``MAX_PEER_FAILURES`` times in a row is dropped).

:class:`PartialFolder` is the pull's state on disk, in ``models/.pull-<sha256>/`` of the home:
``transfer.json`` (the transfer manifest being fetched), ``<i>.part`` (file ``i``, written at
each verified chunk's offset) and ``verified.log`` (one ``file chunk`` line per chunk written
and fsynced). After a crash or ``kill -9`` the next pull of the same manifest re-hashes the
listed chunks (a torn last line or write is simply fetched again) and fetches only the rest.
Blocking I/O: call from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from calinode.protocol.blobs import TransferManifest

ChunkId = tuple[int, int]  # (file index, chunk index)
MAX_PEER_FAILURES = 3
#: ``OVERLOADED`` refusals in a row before a peer is dropped: a busy peer is not a broken one
#: (with the puller's pause between tries, about a minute of refusals)
MAX_PEER_BUSY = 60


@dataclass
class ChunkBook:
    transfer: TransferManifest
    verified: set[ChunkId] = field(default_factory=set)
    pending: deque[ChunkId] = field(default_factory=deque)
    faulty: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    busy: Counter[str] = field(default_factory=Counter)
    dropped: set[str] = field(default_factory=set)
    fetched_bytes: int = 0
    resumed_bytes: int = 0

    @classmethod
    def start(cls, transfer: TransferManifest, verified: Iterable[ChunkId] = ()) -> ChunkBook:
        book = cls(transfer, verified=set(verified))
        book.resumed_bytes = sum(transfer.chunk_length(f, c) for f, c in book.verified)
        book.pending.extend((f, c) for f, item in enumerate(transfer.files)
                            for c in range(len(item.chunks)) if (f, c) not in book.verified)
        return book

    @property
    def done(self) -> bool:
        return len(self.verified) == self.transfer.total_chunks

    @property
    def verified_bytes(self) -> int:
        return self.resumed_bytes + self.fetched_bytes

    def usable(self, peer: str) -> bool:
        return peer not in self.dropped and not self.faulty[peer]

    def take(self) -> ChunkId | None:
        """The next chunk to fetch, or None when none is waiting."""
        return self.pending.popleft() if self.pending else None

    def check(self, chunk: ChunkId, data: bytes) -> bool:
        """Whether ``data`` is the chunk the manifest lists (length and sha256)."""
        f, c = chunk
        return (len(data) == self.transfer.chunk_length(f, c)
                and hashlib.sha256(data).hexdigest() == self.transfer.files[f].chunks[c])

    def arrived(self, chunk: ChunkId, peer: str, size: int) -> None:
        """A verified chunk from ``peer`` was written."""
        self.verified.add(chunk)
        self.fetched_bytes += size
        self.failures[peer] = self.busy[peer] = 0

    def corrupt(self, chunk: ChunkId, peer: str) -> None:
        """``peer`` sent bytes that fail the chunk's hash: refetch elsewhere, use it no more."""
        self.faulty[peer] += 1
        self.pending.appendleft(chunk)

    def failed(self, chunk: ChunkId, peer: str, *, busy: bool = False) -> None:
        """Fetching ``chunk`` from ``peer`` failed in transit, or was refused as ``busy``
        (``OVERLOADED``): retry later; a peer failing too often in a row is dropped."""
        counter, limit = (self.busy, MAX_PEER_BUSY) if busy else (self.failures,
                                                                  MAX_PEER_FAILURES)
        counter[peer] += 1
        if counter[peer] >= limit:
            self.dropped.add(peer)
        self.pending.appendleft(chunk)


class PartialFolder:
    """The on-disk state of one pull (see the module docstring)."""

    def __init__(self, models_root: Path, sha256: str) -> None:
        self.path = models_root / f".pull-{sha256}"

    def part(self, file: int) -> Path:
        return self.path / f"{file}.part"

    @property
    def log(self) -> Path:
        return self.path / "verified.log"

    def open(self, transfer: TransferManifest) -> list[ChunkId]:
        """Start or resume a pull of ``transfer``: the chunks already verified on disk.

        A folder left by a pull of another manifest (another chunk size, say) is wiped."""
        wire = json.dumps(transfer.to_wire(), sort_keys=True)
        saved = self.path / "transfer.json"
        if self.path.is_dir() and (not saved.is_file() or saved.read_text() != wire):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not saved.is_file():
            tmp = self.path / "transfer.json.tmp"
            tmp.write_text(wire)
            os.replace(tmp, saved)
        for f, item in enumerate(transfer.files):
            with self.part(f).open("ab") as fh:
                if fh.tell() < item.size:
                    fh.truncate(item.size)
        return self._recheck(transfer)

    def _recheck(self, transfer: TransferManifest) -> list[ChunkId]:
        listed: set[ChunkId] = set()
        if self.log.is_file():
            for line in self.log.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and all(p.isdigit() for p in parts):
                    listed.add((int(parts[0]), int(parts[1])))
        good = []
        for f, c in sorted(listed):
            if f >= len(transfer.files) or c >= len(transfer.files[f].chunks):
                continue
            with self.part(f).open("rb") as fh:
                fh.seek(c * transfer.chunk_size)
                data = fh.read(transfer.chunk_length(f, c))
            if hashlib.sha256(data).hexdigest() == transfer.files[f].chunks[c]:
                good.append((f, c))
        return good

    def write(self, transfer: TransferManifest, chunk: ChunkId, data: bytes) -> None:
        """Write a verified chunk durably, then list it."""
        f, c = chunk
        fd = os.open(self.part(f), os.O_WRONLY)
        try:
            os.pwrite(fd, data, c * transfer.chunk_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        with self.log.open("a") as fh:
            fh.write(f"{f} {c}\n")
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
