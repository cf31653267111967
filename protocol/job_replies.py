"""Typed, frozen, bounded views of the job replies a coordinator or dispatcher reads.

A reply's ``result`` is a free-form map written by another node: it may lack keys, carry NaN
scores, answer for shards nobody asked for, or hold fewer vectors than texts. Callers parse it
with the kind's ``from_wire`` (giving what they asked for, so counts can be cross-checked)
before reading anything; a map that does not fit raises
:class:`~calinode.protocol.errors.RemoteProtocolError` (``BAD_REQUEST``), which the caller
counts as one failed peer. ``to_wire`` writes the keys the serving node always sent.

=====================  ===============================================
kind                   view
=====================  ===============================================
``embed``              :class:`EmbedReply`
``embed_chunks``       :class:`EmbedChunksReply`
``generate``           :class:`GenerateReply`
``shard.write``        :class:`ShardWriteReply`
``shard.write_many``   :class:`ShardWriteManyReply` (per shard, a reply or a failure)
``shard.search``       :class:`ShardSearchReply` (per shard, :class:`ShardHits`)
``shard.fetch``        :class:`ShardFetchReply` (:class:`FetchedChunk` by chunk id)
``shard.changes``      :class:`ShardChangesReply` (documents as ``WireDoc``), or with
                       ``keys_only`` :class:`ShardKeysReply` (:class:`DocKey` states)
``shard.info``         :class:`ShardInfoReply`
=====================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from .collections import MAX_SHARDS
from .errors import ErrorCode
from .job_params import (
    MAX_CHANGES_LIMIT,
    MAX_CONTENT_HASH,
    MAX_DOC_CHUNKS,
    MAX_DOC_ID_CHARS,
    MAX_K,
    MAX_KEYS_LIMIT,
    MAX_TEXT_CHARS,
    WireDoc,
    check_json,
    check_keys,
    check_list,
    decode_ids,
    encode_ids,
)
from .limits import DEFAULT_LIMITS
from .validation import (
    DIGEST,
    MAX_INT64,
    SHA256,
    check_bytes,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)
from .vectors import decode_vectors, encode_vectors

__all__ = [
    "FINISH_REASONS",
    "DocKey",
    "EmbedChunksReply",
    "EmbedReply",
    "FetchedChunk",
    "GenerateReply",
    "ShardChangesReply",
    "ShardFetchReply",
    "ShardHits",
    "ShardInfoReply",
    "ShardInfoRow",
    "ShardKeysReply",
    "ShardSearchReply",
    "ShardWriteFailure",
    "ShardWriteManyReply",
    "ShardWriteReply",
    "TextSpan",
]

FINISH_REASONS: Final = ("stop", "length", "cancelled")
_ERROR_CODES: Final = frozenset(code.value for code in ErrorCode)
#: Longest error message a ``shard.write_many`` reply may carry for one shard.
MAX_ERROR_MESSAGE: Final = 1024
MAX_SCORE: Final = 1e30
MAX_PROBLEMS: Final = 64


def _vectors(value: object, rows: int | None, dim: int | None) -> npt.NDArray[np.float32]:
    vectors = decode_vectors(value, dim=dim)
    if vectors.ndim != 2:
        invalid("reply vectors must be 2-D")
    if rows is not None and len(vectors) != rows:
        invalid(f"reply has {len(vectors)} vectors for {rows} inputs")
    if not np.isfinite(vectors).all():
        invalid("reply vectors hold NaN or infinite values")
    return vectors


def _sha(value: object) -> None:
    check_str("sha256", value, min_len=64, max_len=64, pattern=SHA256)


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class EmbedReply:
    """``embed``: one vector per text, token counts, indexes of the truncated texts."""

    model: str
    sha256: str
    dim: int
    vectors: npt.NDArray[np.float32]
    token_counts: tuple[int, ...]
    truncated: tuple[int, ...]

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            invalid(f"dim {self.dim} does not match vectors of shape {self.vectors.shape}")
        if len(self.token_counts) != len(self.vectors):
            invalid(f"{len(self.token_counts)} token counts for {len(self.vectors)} vectors")
        for n in self.token_counts:
            check_int("token_counts", n, lo=0, hi=1 << 31)
        previous = -1
        for i in self.truncated:
            check_int("truncated", i, lo=previous + 1, hi=len(self.vectors) - 1)
            previous = i

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "dim", "vectors", "token_counts", "truncated"})

    @classmethod
    def from_wire(cls, data: object, *, texts: int | None = None) -> EmbedReply:
        """The reply of an embed of ``texts`` texts (when given, exactly that many rows)."""
        with from_peer():
            wire = check_keys("embed reply", data, cls._KEYS, cls._KEYS)
            check_int("dim", wire["dim"], lo=1, hi=16384)
            rows = texts
            vectors = _vectors(wire["vectors"], rows, wire["dim"])
            limit = DEFAULT_LIMITS.max_array
            return cls(model=wire["model"], sha256=wire["sha256"], dim=wire["dim"],
                       vectors=vectors,
                       token_counts=tuple(check_list("token_counts", wire["token_counts"],
                                                     max_len=limit)),
                       truncated=tuple(check_list("truncated", wire["truncated"],
                                                  max_len=limit)))

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "dim": self.dim,
                "vectors": encode_vectors(self.vectors), "token_counts": list(self.token_counts),
                "truncated": list(self.truncated)}


@dataclass(frozen=True, kw_only=True, slots=True)
class TextSpan:
    """One chunk cut by ``embed_chunks``: its text and character offsets into the document."""

    text: str
    start: int
    end: int

    def __post_init__(self) -> None:
        check_str("chunk text", self.text, min_len=0, max_len=MAX_TEXT_CHARS)
        check_int("chunk start", self.start, lo=0, hi=MAX_TEXT_CHARS)
        check_int("chunk end", self.end, lo=self.start, hi=MAX_TEXT_CHARS)

    def to_wire(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class EmbedChunksReply:
    """``embed_chunks``: per document its chunks, and one vector per chunk in that order."""

    model: str
    sha256: str
    dim: int
    vectors: npt.NDArray[np.float32]
    chunks: tuple[tuple[TextSpan, ...], ...]

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            invalid(f"dim {self.dim} does not match vectors of shape {self.vectors.shape}")
        total = sum(len(c) for c in self.chunks)
        if total != len(self.vectors):
            invalid(f"{total} chunks but {len(self.vectors)} vectors")

    _KEYS: ClassVar[frozenset[str]] = frozenset({"model", "sha256", "dim", "vectors", "chunks"})

    @classmethod
    def from_wire(cls, data: object, *, docs: int | None = None,
                  dim: int | None = None) -> EmbedChunksReply:
        with from_peer():
            wire = check_keys("embed_chunks reply", data, cls._KEYS, cls._KEYS)
            check_int("dim", wire["dim"], lo=1, hi=16384)
            if dim is not None and wire["dim"] != dim:
                invalid(f"reply vectors have dimension {wire['dim']}, expected {dim}")
            per_doc = check_list("chunks", wire["chunks"], max_len=DEFAULT_LIMITS.max_batch)
            if docs is not None and len(per_doc) != docs:
                invalid(f"chunks for {len(per_doc)} documents, {docs} were sent")
            keys = frozenset({"text", "start", "end"})
            chunks = tuple(
                tuple(TextSpan(**check_keys("chunk", c, keys, keys))
                      for c in check_list("chunks of a document", doc, max_len=MAX_DOC_CHUNKS))
                for doc in per_doc)
            vectors = _vectors(wire["vectors"], sum(len(c) for c in chunks), wire["dim"])
            return cls(model=wire["model"], sha256=wire["sha256"], dim=wire["dim"],
                       vectors=vectors, chunks=chunks)

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "dim": self.dim,
                "vectors": encode_vectors(self.vectors),
                "chunks": [[c.to_wire() for c in doc] for doc in self.chunks]}


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerateReply:
    model: str
    sha256: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        check_str("model", self.model, max_len=128)
        _sha(self.sha256)
        check_str("text", self.text, min_len=0, max_len=DEFAULT_LIMITS.max_str)
        if self.finish_reason not in FINISH_REASONS:
            invalid(f"finish_reason must be one of {', '.join(FINISH_REASONS)}")
        check_int("prompt_tokens", self.prompt_tokens, lo=0, hi=1 << 31)
        check_int("completion_tokens", self.completion_tokens, lo=0, hi=1 << 31)

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"model", "sha256", "text", "finish_reason", "usage"})

    @classmethod
    def from_wire(cls, data: object) -> GenerateReply:
        with from_peer():
            wire = check_keys("generate reply", data, cls._KEYS, cls._KEYS)
            keys = frozenset({"prompt_tokens", "completion_tokens"})
            usage = check_keys("usage", wire["usage"], keys, keys)
            return cls(model=wire["model"], sha256=wire["sha256"], text=wire["text"],
                       finish_reason=wire["finish_reason"], **usage)

    def to_wire(self) -> dict[str, Any]:
        return {"model": self.model, "sha256": self.sha256, "text": self.text,
                "finish_reason": self.finish_reason,
                "usage": {"prompt_tokens": self.prompt_tokens,
                          "completion_tokens": self.completion_tokens}}


#: What a replica did with each document of a write.
WRITE_OUTCOMES: Final = frozenset({"inserted", "replaced", "deleted", "unchanged", "stale"})


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardWriteReply:
    """``shard.write``: documents per outcome, and each document's outcome (``stale`` means
    the replica holds a newer version: the write changed nothing there)."""

    inserted: int
    replaced: int
    deleted: int
    unchanged: int
    stale: int
    outcomes: Mapping[str, str]

    def __post_init__(self) -> None:
        for name in ("inserted", "replaced", "deleted", "unchanged", "stale"):
            check_int(name, getattr(self, name), lo=0, hi=DEFAULT_LIMITS.max_batch)
        check_instance("outcomes", self.outcomes, dict)
        if len(self.outcomes) > DEFAULT_LIMITS.max_batch:
            invalid(f"outcomes may name at most {DEFAULT_LIMITS.max_batch} documents")
        for doc_id, outcome in self.outcomes.items():
            check_str("outcomes doc_id", doc_id, max_len=MAX_DOC_ID_CHARS)
            if not isinstance(outcome, str) or outcome not in WRITE_OUTCOMES:
                invalid(f"unknown write outcome {outcome!r}"[:120])

    _KEYS: ClassVar[frozenset[str]] = frozenset(
        {"inserted", "replaced", "deleted", "unchanged", "stale", "outcomes"})

    @classmethod
    def from_wire(cls, data: object) -> ShardWriteReply:
        with from_peer():
            return cls(**check_keys("shard.write reply", data, cls._KEYS, cls._KEYS))

    def to_wire(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "replaced": self.replaced, "deleted": self.deleted,
                "unchanged": self.unchanged, "stale": self.stale,
                "outcomes": dict(self.outcomes)}


@dataclass(frozen=True, slots=True)
class ShardWriteFailure:
    """One shard of a ``shard.write_many`` that failed on the replica: the error's code (one
    of :class:`~calinode.protocol.errors.ErrorCode`) and message."""

    code: str
    message: str

    def __post_init__(self) -> None:
        check_str("code", self.code, max_len=64)
        if self.code not in _ERROR_CODES:
            invalid(f"unknown error code {self.code!r}"[:120])
        check_str("message", self.message, min_len=0, max_len=MAX_ERROR_MESSAGE)


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardWriteManyReply:
    """``shard.write_many``: for every shard asked, exactly once, its ``shard.write`` reply
    or its failure (a shard fails alone, as its own ``shard.write`` would have)."""

    results: Mapping[int, ShardWriteReply | ShardWriteFailure]

    @classmethod
    def from_wire(cls, data: object, *, shards: Sequence[int]) -> ShardWriteManyReply:
        with from_peer():
            wire = check_keys("shard.write_many reply", data, frozenset({"shards"}),
                              frozenset({"shards"}))
            items = check_list("shards", wire["shards"], max_len=len(shards))
            results: dict[int, ShardWriteReply | ShardWriteFailure] = {}
            for item in items:
                entry = check_keys("shard.write_many result", item,
                                   frozenset({"shard", "result", "error", "message"}),
                                   frozenset({"shard"}))
                shard = entry["shard"]
                check_int("shard", shard, lo=0, hi=MAX_SHARDS - 1)
                if shard in results:
                    invalid(f"shard {shard} answered twice")
                if ("result" in entry) == ("error" in entry):
                    invalid(f"shard {shard}: a result or an error, exactly one")
                results[shard] = (ShardWriteReply.from_wire(entry["result"]) if "result" in entry
                                  else ShardWriteFailure(entry["error"],
                                                         entry.get("message", "")))
            if sorted(results) != sorted(shards):
                invalid("the reply must answer exactly the shards asked")
            return cls(results=results)

    def to_wire(self) -> dict[str, Any]:
        return {"shards": [
            {"shard": shard, "result": r.to_wire()} if isinstance(r, ShardWriteReply)
            else {"shard": shard, "error": r.code, "message": r.message}
            for shard, r in sorted(self.results.items())]}


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class ShardHits:
    """One shard's answer to a search: for each query row, ``counts[q]`` hits, given as chunk
    ids (the stores' FAISS ids of ``(doc_id, chunk)``) and scores, best first in the order of
    :mod:`calinode.protocol.ranking`. Rows are stored one after the other in ``ids`` and
    ``scores``; the wire form is three binary arrays, so a reply's size depends only on its
    number of hits (``protocol/search_budget.py``)."""

    counts: npt.NDArray[np.uint32]
    ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]) -> ShardHits:
        counts = np.array([len(np.asarray(ids)) for ids, _ in rows], dtype=np.uint32)
        ids = [np.asarray(i, dtype=np.int64) for i, _ in rows]
        scores = [np.asarray(s, dtype=np.float32) for _, s in rows]
        return cls(counts=counts,
                   ids=np.concatenate(ids) if ids else np.empty(0, np.int64),
                   scores=np.concatenate(scores) if scores else np.empty(0, np.float32))

    def rows(self) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """``(ids, scores)`` of each query row."""
        ends = np.cumsum(self.counts, dtype=np.int64)
        starts = ends - self.counts.astype(np.int64)
        return [(self.ids[a:b], self.scores[a:b])
                for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]

    @classmethod
    def from_wire(cls, data: object, *, queries: int, k: int) -> ShardHits:
        wire = check_keys("shard hits", data, cls._KEYS, cls._KEYS)
        counts_raw = wire["counts"]
        check_bytes("counts", counts_raw, min_len=4 * queries, max_len=4 * queries)
        counts = np.frombuffer(counts_raw, dtype="<u4").astype(np.uint32)
        if len(counts) and int(counts.max()) > k:
            invalid(f"a row holds more than k={k} hits")
        total = int(counts.sum(dtype=np.int64))
        ids = decode_ids("ids", wire["ids"], max_len=total)
        if len(ids) != total:
            invalid(f"ids holds {len(ids)} chunk ids for {total} hits")
        check_bytes("scores", wire["scores"], min_len=4 * total, max_len=4 * total)
        scores = np.frombuffer(wire["scores"], dtype="<f4").astype(np.float32)
        if not np.isfinite(scores).all() or (total and float(np.abs(scores).max()) > MAX_SCORE):
            invalid("scores must be finite")
        row_of = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
        same_row = row_of[1:] == row_of[:-1]
        if bool(np.any(same_row & (scores[1:] > scores[:-1]))):
            invalid("hits must come best first")
        order = np.lexsort((ids, row_of))
        if bool(np.any((row_of[order][1:] == row_of[order][:-1])
                       & (ids[order][1:] == ids[order][:-1]))):
            invalid("a row names one chunk twice")
        return cls(counts=counts, ids=ids, scores=scores)

    _KEYS: ClassVar[frozenset[str]] = frozenset({"counts", "ids", "scores"})

    def to_wire(self) -> dict[str, Any]:
        return {"counts": np.ascontiguousarray(self.counts, dtype="<u4").tobytes(),
                "ids": encode_ids(self.ids),
                "scores": np.ascontiguousarray(self.scores, dtype="<f4").tobytes()}


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardSearchReply:
    """``shard.search``: per shard asked, one row of at most ``k`` hits per query, best first
    (chunk ids and scores only: keys and texts come from ``shard.fetch``)."""

    results: Mapping[int, ShardHits]

    @classmethod
    def from_wire(cls, data: object, *, shards: tuple[int, ...] | list[int], queries: int,
                  k: int) -> ShardSearchReply:
        """The reply to a search of ``queries`` queries on ``shards``: exactly those shards,
        ``queries`` rows each, at most ``k`` hits a row, finite scores in descending order."""
        with from_peer():
            wire = check_keys("shard.search reply", data, frozenset({"results"}),
                              frozenset({"results"}))
            results = wire["results"]
            expected = {str(s) for s in shards}
            if not isinstance(results, dict) or set(results) != expected:
                invalid("results must hold exactly the shards asked for")
            check_int("k", k, lo=1, hi=MAX_K)
            out: dict[int, ShardHits] = {}
            for shard in shards:
                check_int("shard", shard, lo=0, hi=MAX_SHARDS - 1)
                out[shard] = ShardHits.from_wire(results[str(shard)], queries=queries, k=k)
            return cls(results=out)

    def to_wire(self) -> dict[str, Any]:
        return {"results": {str(shard): hits.to_wire() for shard, hits in self.results.items()}}


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedChunk:
    """What ``shard.fetch`` says of one chunk id (``text`` and ``metadata`` empty when the
    fetch asked for keys only)."""

    doc_id: str
    chunk: int
    text: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_str("doc_id", self.doc_id, max_len=MAX_DOC_ID_CHARS)
        check_int("chunk", self.chunk, lo=0, hi=MAX_DOC_CHUNKS)
        check_str("text", self.text, min_len=0, max_len=MAX_TEXT_CHARS)
        check_instance("metadata", self.metadata, dict)
        check_json("metadata", self.metadata)


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardFetchReply:
    """``shard.fetch``: the chunks found among the first ``done`` ids asked (ids of chunks
    deleted since the search are left out); the caller asks again for the rest."""

    chunks: Mapping[int, FetchedChunk]
    done: int

    @classmethod
    def from_wire(cls, data: object, *, ids: npt.NDArray[np.int64], text: bool,
                  chunk_id: Callable[[str, int], int] | None = None) -> ShardFetchReply:
        """The reply to a fetch of ``ids``: ``done`` in 1..len(ids), entries only for ids
        among the first ``done`` asked, each once, of the asked form (with or without text);
        with ``chunk_id``, each entry's ``(doc_id, chunk)`` must hash to its id."""
        with from_peer():
            wire = check_keys("shard.fetch reply", data, frozenset({"chunks", "done"}),
                              frozenset({"chunks", "done"}))
            check_int("done", wire["done"], lo=1, hi=len(ids))
            done = int(wire["done"])
            asked = set(ids[:done].tolist())
            width = 5 if text else 3
            out: dict[int, FetchedChunk] = {}
            for entry in check_list("chunks", wire["chunks"], max_len=done):
                check_list("chunk entry", entry, min_len=width, max_len=width)
                fid = entry[0]
                check_int("chunk id", fid, lo=0, hi=MAX_INT64)
                if fid not in asked:
                    invalid(f"chunk id {fid} was not asked for")
                if fid in out:
                    invalid(f"chunk id {fid} answered twice")
                chunk = FetchedChunk(doc_id=entry[1], chunk=entry[2],
                                     **({"text": entry[3], "metadata": entry[4]} if text else {}))
                if chunk_id is not None and chunk_id(chunk.doc_id, chunk.chunk) != fid:
                    invalid(f"chunk id {fid} is not the id of {chunk.doc_id!r}#{chunk.chunk}")
                out[fid] = chunk
            return cls(chunks=out, done=done)


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardChangesReply:
    """``shard.changes``: a page of documents in (version, doc_id) order, and the digest of
    the serving replica."""

    docs: tuple[WireDoc, ...]
    digest: str

    def __post_init__(self) -> None:
        check_str("digest", self.digest, max_len=128, pattern=DIGEST)
        keys = [(d.version, d.doc_id) for d in self.docs]
        if keys != sorted(keys):
            invalid("documents must come in (version, doc_id) order")

    @classmethod
    def from_wire(cls, data: object, *, limit: int = MAX_CHANGES_LIMIT) -> ShardChangesReply:
        with from_peer():
            keys = frozenset({"docs", "digest"})
            wire = check_keys("shard.changes reply", data, keys, keys)
            docs = tuple(WireDoc.from_wire(d)
                         for d in check_list("docs", wire["docs"], max_len=limit))
            return cls(docs=docs, digest=wire["digest"])

    def to_wire(self) -> dict[str, Any]:
        return {"docs": [d.to_wire() for d in self.docs], "digest": self.digest}


@dataclass(frozen=True, slots=True)
class DocKey:
    """One document's state in a keys-only ``shard.changes`` page (a tombstone: ``deleted``
    and an empty ``content_hash``; a live document: a non-empty one)."""

    doc_id: str
    content_hash: str
    version: int
    deleted: bool

    def __post_init__(self) -> None:
        check_str("doc_id", self.doc_id, max_len=MAX_DOC_ID_CHARS)
        check_instance("deleted", self.deleted, bool)
        check_str("content_hash", self.content_hash, min_len=0 if self.deleted else 1,
                  max_len=0 if self.deleted else MAX_CONTENT_HASH)
        check_int("version", self.version, lo=0, hi=MAX_INT64)

    @classmethod
    def from_wire(cls, data: object) -> DocKey:
        item = check_list("key", data, min_len=4, max_len=4)
        return cls(item[0], item[1], item[2], item[3])

    def to_wire(self) -> list[Any]:
        return [self.doc_id, self.content_hash, self.version, self.deleted]


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardKeysReply:
    """``shard.changes`` with ``keys_only``: up to the asked ``limit`` document states after
    the asked ``after_doc_id``, in strictly increasing doc_id order (so a page never repeats
    or goes back, and paging ends), and the digest of the serving replica."""

    keys: tuple[DocKey, ...]
    digest: str

    def __post_init__(self) -> None:
        check_str("digest", self.digest, max_len=128, pattern=DIGEST)

    @classmethod
    def from_wire(cls, data: object, *, after: str = "", limit: int = MAX_KEYS_LIMIT
                  ) -> ShardKeysReply:
        with from_peer():
            keys = frozenset({"keys", "digest"})
            wire = check_keys("shard.changes keys reply", data, keys, keys)
            items = tuple(DocKey.from_wire(k) for k in check_list(
                "keys", wire["keys"], max_len=min(limit, MAX_KEYS_LIMIT)))
            last = after
            for key in items:
                if key.doc_id <= last:
                    invalid(f"keys must come after {after!r} in increasing doc_id order")
                last = key.doc_id
            return cls(keys=items, digest=wire["digest"])

    def to_wire(self) -> dict[str, Any]:
        return {"keys": [k.to_wire() for k in self.keys], "digest": self.digest}


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInfoRow:
    shard: int
    docs: int
    chunks: int
    problems: tuple[str, ...]
    ready: bool
    digest: str

    def __post_init__(self) -> None:
        check_int("shard", self.shard, lo=0, hi=MAX_SHARDS - 1)
        check_int("docs", self.docs, lo=0, hi=MAX_INT64)
        check_int("chunks", self.chunks, lo=0, hi=MAX_INT64)
        check_list("problems", list(self.problems), max_len=MAX_PROBLEMS)
        for p in self.problems:
            check_str("problem", p, min_len=0, max_len=1024)
        check_instance("ready", self.ready, bool)
        check_str("digest", self.digest, max_len=128, pattern=DIGEST)

    def to_wire(self) -> dict[str, Any]:
        return {"shard": self.shard, "docs": self.docs, "chunks": self.chunks,
                "problems": list(self.problems), "ready": self.ready, "digest": self.digest}


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardInfoReply:
    shards: tuple[ShardInfoRow, ...]

    @classmethod
    def from_wire(cls, data: object) -> ShardInfoReply:
        with from_peer():
            wire = check_keys("shard.info reply", data, frozenset({"shards"}),
                              frozenset({"shards"}))
            keys = frozenset({"shard", "docs", "chunks", "problems", "ready", "digest"})
            rows = []
            for r in check_list("shards", wire["shards"], max_len=MAX_SHARDS):
                row = dict(check_keys("shard row", r, keys, keys))
                row["problems"] = tuple(check_list("problems", row["problems"],
                                                   max_len=MAX_PROBLEMS))
                rows.append(ShardInfoRow(**row))
            return cls(shards=tuple(rows))

    def to_wire(self) -> dict[str, Any]:
        return {"shards": [r.to_wire() for r in self.shards]}
