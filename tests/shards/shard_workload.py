"""Deterministic documents for the shard store tests (also imported by the kill -9 child).

``workload_doc(doc_id, version, dim)`` always builds the same document for the same arguments:
1 to 4 chunks whose vectors are random unit vectors seeded by ``(doc_id, version)``, and a
content hash of that pair, so a test (or the parent of a killed writer) can recompute what a
stored document must hold.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from calinode.models.store.records import ChunkWrite, DocWrite


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _seed(*parts: object) -> int:
    text = "\x00".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def workload_doc(doc_id: str, version: int, dim: int) -> DocWrite:
    rng = np.random.default_rng(_seed(doc_id, version))
    n = int(rng.integers(1, 5))
    vectors = unit_vectors(rng, n, dim)
    chunks = [
        ChunkWrite(f"{doc_id} v{version} chunk {c} " * 8, vectors[c], {"doc": doc_id, "c": c})
        for c in range(n)
    ]
    return DocWrite(doc_id, f"sha-{_seed('hash', doc_id, version):016x}", version, chunks)
