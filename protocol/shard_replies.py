"""Typed, frozen, bounded views of the replies of the ``shard.*`` job kinds, read by the
coordinator. The rules are those of :mod:`calinode.protocol.job_replies` (parse with the
kind's ``from_wire``, giving what was asked so counts can be cross-checked; a reply that does
not fit is ``BAD_REQUEST`` and counts as one failed holder).

=====================  ===============================================
kind                   view
=====================  ===============================================
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
    MAX_DOC_CHUNKS,
    MAX_DOC_ID_CHARS,
    MAX_K,
    MAX_TEXT_CHARS,
    check_json,
    check_keys,
    check_list,
)
from .limits import DEFAULT_LIMITS
from .shard_params import decode_ids, encode_ids
from .validation import (
    DIGEST,
    MAX_INT64,
    check_bytes,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)

_ERROR_CODES: Final = frozenset(code.value for code in ErrorCode)
#: Longest error message a ``shard.write_many`` reply may carry for one shard.
MAX_ERROR_MESSAGE: Final = 1024
MAX_SCORE: Final = 1e30
MAX_PROBLEMS: Final = 64

__all__ = [
    "WRITE_OUTCOMES",
    "FetchedChunk",
    "ShardFetchReply",
    "ShardHits",
    "ShardInfoReply",
    "ShardInfoRow",
    "ShardSearchReply",
    "ShardWriteFailure",
    "ShardWriteManyReply",
    "ShardWriteReply",
]


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
