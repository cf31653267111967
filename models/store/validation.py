"""Validation of what a shard store is given: document ids, versions, content hashes, chunks,
queries and limits. Invalid input raises ``JobError(BAD_REQUEST)`` before anything is written
(see :mod:`calinode.models.store.shard_store`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, get_args

import numpy as np
import numpy.typing as npt

from calinode.models.store.digest import MAX_VERSION, DocState
from calinode.models.store.records import ChunkWrite, DocRecord, DocWrite, IndexKind, Metric
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

MAX_DOC_ID_BYTES: Final = 1024
MAX_CONTENT_HASH_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Incoming:
    """A validated write of one document (vectors already stacked as (n, dim) '<f4')."""

    doc_id: str
    state: DocState
    texts: list[str]
    metadata: list[str]
    vectors: npt.NDArray[np.float32]


def bad(message: str) -> NoReturn:
    raise JobError(message, code=ErrorCode.BAD_REQUEST)


def check_doc_id(doc_id: object) -> str:
    if not isinstance(doc_id, str) or not doc_id:
        bad(f"doc_id must be a non-empty string, not {doc_id!r}")
    try:
        size = len(doc_id.encode("utf-8"))
    except UnicodeEncodeError:
        bad(f"doc_id {doc_id!r} is not valid UTF-8 text")
    if size > MAX_DOC_ID_BYTES:
        bad(f"doc_id is {size} bytes long; at most {MAX_DOC_ID_BYTES} are allowed")
    return doc_id


def check_version(version: object, doc_id: str) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        bad(f"{doc_id!r}: version must be an int, not {version!r}")
    if not 0 <= version <= MAX_VERSION:
        bad(f"{doc_id!r}: version {version} is outside 0..2**63-1")
    return version


def check_chunks(
    doc_id: str, chunks: Sequence[ChunkWrite], dim: int
) -> tuple[list[str], list[str], npt.NDArray[np.float32]]:
    texts: list[str] = []
    metadata: list[str] = []
    vectors: list[npt.NDArray[Any]] = []
    for n, chunk in enumerate(chunks):
        where = f"{doc_id!r} chunk {n}"
        if not isinstance(chunk, ChunkWrite):
            bad(f"{where}: expected a ChunkWrite, not {type(chunk).__name__}")
        if not isinstance(chunk.text, str):
            bad(f"{where}: text must be a string")
        try:
            chunk.text.encode("utf-8")
            if not isinstance(chunk.metadata, Mapping):
                raise TypeError("metadata must be a mapping")
            meta = json.dumps(
                dict(chunk.metadata), sort_keys=True, separators=(",", ":"),
                ensure_ascii=False, allow_nan=False,
            )
            meta.encode("utf-8")
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            bad(f"{where}: {exc}")
        v = chunk.vector
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.dtype.itemsize != 4:
            got = v.dtype if isinstance(v, np.ndarray) else type(v).__name__
            bad(f"{where}: the vector must be a float32 numpy array, not {got}")
        if v.shape != (dim,):
            bad(f"{where}: expected a vector of shape ({dim},), got {v.shape}")
        texts.append(chunk.text)
        metadata.append(meta)
        vectors.append(v)
    stacked = (np.stack(vectors).astype("<f4", copy=False) if vectors
               else np.empty((0, dim), dtype="<f4"))
    if not np.isfinite(stacked).all():
        bad(f"{doc_id!r}: a vector holds NaN or infinite values")
    return texts, metadata, stacked


def check_content_hash(content_hash: object, doc_id: str) -> str:
    if not isinstance(content_hash, str) or not content_hash:
        bad(f"{doc_id!r}: content_hash must be a non-empty string")
    if len(content_hash) > MAX_CONTENT_HASH_CHARS:
        bad(f"{doc_id!r}: content_hash longer than {MAX_CONTENT_HASH_CHARS} characters")
    return content_hash


def incoming_doc(doc: DocWrite | DocRecord, dim: int) -> Incoming:
    doc_id = check_doc_id(doc.doc_id)
    version = check_version(doc.version, doc_id)
    if isinstance(doc, DocRecord) and doc.deleted:
        if doc.chunks:
            bad(f"{doc_id!r}: a tombstone record carries no chunks")
        empty = np.empty((0, dim), dtype="<f4")
        return Incoming(doc_id, DocState(version, True, ""), [], [], empty)
    content_hash = check_content_hash(doc.content_hash, doc_id)
    if not isinstance(doc.chunks, Sequence):
        bad(f"{doc_id!r}: chunks must be a sequence of ChunkWrite")
    texts, metadata, vectors = check_chunks(doc_id, doc.chunks, dim)
    return Incoming(doc_id, DocState(version, False, content_hash), texts, metadata, vectors)


def unique(items: list[Incoming]) -> list[Incoming]:
    seen: set[str] = set()
    for item in items:
        if item.doc_id in seen:
            bad(f"{item.doc_id!r} appears twice in one write")
        seen.add(item.doc_id)
    return items



def check_limit(limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        bad(f"limit must be a positive int, not {limit!r}")


def check_queries(queries: npt.NDArray[np.float32], k: int, dim: int) -> npt.NDArray[np.float32]:
    """``queries`` as a C-contiguous (q, dim) float32 array of finite values; ``k`` >= 1."""
    if not isinstance(queries, np.ndarray) or queries.ndim != 2:
        bad("queries must be a 2-D numpy array (q, dim)")
    if queries.shape[1] != dim:
        bad(f"expected queries of dimension {dim}, got shape {queries.shape}")
    if queries.dtype.kind != "f" or queries.dtype.itemsize != 4:
        bad(f"queries must be float32, not {queries.dtype}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if not np.isfinite(q).all():
        bad("queries hold NaN or infinite values")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        bad(f"k must be a positive int, not {k!r}")
    return q


def check_config(dim: object, metric: object, index_kind: object,
                 hnsw: tuple[int, int, int]) -> None:
    """Refuse (``ConfigError``) a store's dim, metric, index kind or HNSW parameters."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"dim must be a positive int, not {dim!r}")
    if metric not in get_args(Metric):
        raise ConfigError(f"metric must be one of {get_args(Metric)}, not {metric!r}")
    if index_kind not in get_args(IndexKind):
        raise ConfigError(
            f"index_kind must be one of {get_args(IndexKind)}, not {index_kind!r}"
        )
    if min(hnsw) < 1:
        raise ConfigError("hnsw_m, hnsw_ef_construction and hnsw_ef_search must be >= 1")
