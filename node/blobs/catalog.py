"""This node's installed models as model blobs: transfer manifests and chunk reads.

A model blob is the model's folder (``models/registry.py``): every file its manifest lists,
weights first, plus the manifest's JSON text. The chunk hashes of a model are computed once
(a full read of its files, in a worker thread) and kept while the model stays installed with
the same manifest; the cache holds only models of this node's own registry, so peers cannot
grow it. Lookups by sha256 read the registry's manifests at most every ``INDEX_TTL`` seconds,
so a flood of requests for unknown hashes costs no disk reads.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from calinode.models.manifest import ModelManifest
from calinode.models.registry import ModelRegistry
from calinode.protocol.blobs import DEFAULT_CHUNK_SIZE, BlobFile, TransferManifest

INDEX_TTL = 5.0


@dataclass(frozen=True)
class LocalBlob:
    """A model this node can serve: its transfer manifest and the paths of its files."""

    transfer: TransferManifest
    paths: tuple[Path, ...]


def chunk_hashes(path: Path, chunk_size: int) -> tuple[str, ...]:
    """The sha256 of each ``chunk_size`` piece of ``path`` (blocking)."""
    hashes = []
    with path.open("rb") as fh:
        while block := fh.read(chunk_size):
            hashes.append(hashlib.sha256(block).hexdigest())
    return tuple(hashes)


def build_blob(registry: ModelRegistry, manifest: ModelManifest, chunk_size: int) -> LocalBlob:
    """The transfer manifest of an installed model (blocking: reads every file once)."""
    paths = tuple(registry.path_of(manifest, item) for item in manifest.files)
    files = tuple(BlobFile(path=item.path, size=item.size, sha256=item.sha256,
                           chunks=chunk_hashes(path, chunk_size))
                  for item, path in zip(manifest.files, paths, strict=True))
    return LocalBlob(TransferManifest(sha256=manifest.sha256, chunk_size=chunk_size,
                                      model=manifest.to_json(), files=files), paths)


def read_chunk(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset`` (blocking)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        return fh.read(length)


class ModelCatalog:
    """The models of ``registry`` by sha256, as blobs (see the module docstring)."""

    def __init__(self, registry: ModelRegistry, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.registry = registry
        self.chunk_size = chunk_size
        self._index: dict[str, ModelManifest] = {}
        self._indexed_at = -INDEX_TTL
        self._blobs: dict[str, LocalBlob] = {}
        self._lock = trio.Lock()  # one hashing pass at a time

    def _read_index(self) -> dict[str, ModelManifest]:
        index = {}
        for name in self.registry.names():
            try:
                manifest = self.registry.get(name)
            except Exception:  # a damaged manifest: not served
                continue
            index[manifest.sha256] = manifest
        return index

    async def lookup(self, sha256: str) -> LocalBlob | None:
        """The blob of the installed model ``sha256``, or None."""
        now = time.monotonic()
        if now - self._indexed_at >= INDEX_TTL:
            self._index = await trio.to_thread.run_sync(self._read_index)
            self._indexed_at = time.monotonic()
            self._blobs = {sha: blob for sha, blob in self._blobs.items() if sha in self._index}
        manifest = self._index.get(sha256)
        if manifest is None:
            return None
        async with self._lock:
            blob = self._blobs.get(sha256)
            if blob is None or blob.transfer.model != manifest.to_json():
                blob = await trio.to_thread.run_sync(
                    build_blob, self.registry, manifest, self.chunk_size)
                self._blobs[sha256] = blob
        return blob

    def held(self) -> list[str]:
        """The sha256s indexed at the last lookup."""
        return sorted(self._index)
