"""The coordinator's pure decisions: deadlines, which holder is asked for which shard and when
a slow round is hedged, how one ingest is cut into embedding batches and spread over the
embedders, how shard answers merge into each query's top-k, and what a user is told about a
replication the live swarm cannot give.

Plain functions and small classes over plain data (no network, no store), so each is unit
tested alone; the I/O shells around them are ``ingest.py``, ``search.py`` and ``sync.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from calinode.models.store.digest import chunk_faiss_id
from calinode.node.index.merge import ShardHit, cut_candidates, merge_topk
from calinode.node.index.placement import PlacementMap
from calinode.node.jobs.routing import Candidate
from calinode.protocol.collections import CollectionDef
from calinode.protocol.shard_replies import FetchedChunk

INGEST_BATCH = 16
HEDGE_AFTER = 0.25  # seconds before a second holder is asked for a slow shard ...
HEDGE_BYTES_PER_SECOND = 20e6  # ... plus the time its reply may take to arrive at this rate


def deadline_of(deadline: float | None, timeout: float) -> float:
    """The caller's absolute deadline (trio time), or ``timeout`` seconds from now for a
    caller that has none: every step of one request spends the same budget."""
    return trio.current_time() + timeout if deadline is None else deadline


@dataclass
class ShardPlan:
    shard: int
    holders: list[str]  # live peers holding the shard, preferred first


def shard_plans(definition: CollectionDef, placement: PlacementMap,
                holders: Mapping[int, Mapping[str, str]]) -> list[ShardPlan]:
    """Per shard, its live holders: its placement owners first, then the others (sorted)."""
    plans = []
    for shard in range(definition.shards):
        have = holders.get(shard, {})
        owners = [p for p in placement.owners(shard) if p in have]
        rest = sorted(p for p in have if p not in owners)
        plans.append(ShardPlan(shard, owners + rest))
    return plans


def hedge_after(reply_bytes: float) -> float:
    """Seconds after which a search round is slow and its unanswered shards are asked again:
    ``HEDGE_AFTER`` plus the time the round's replies take to arrive. Hedging a large search
    after HEDGE_AFTER alone would ask every shard again while the first answers are still on
    their way."""
    return HEDGE_AFTER + reply_bytes / HEDGE_BYTES_PER_SECOND


def next_groups(holders: Mapping[int, list[str]], answered: Mapping[int, object],
                inflight: Mapping[int, int], tried: set[tuple[str, int]], *,
                hedge: bool) -> dict[str, list[int]]:
    """The next holder of every unanswered shard, grouped by holder: of those with no attempt
    left in flight (theirs failed) at once, of every one when ``hedge`` (a slow round). Each
    (holder, shard) chosen is added to ``tried``: no holder is asked twice for a shard."""
    groups: dict[str, list[int]] = {}
    for shard, peers in holders.items():
        if shard in answered or (inflight[shard] and not hedge):
            continue
        nxt = next((p for p in peers if (p, shard) not in tried), None)
        if nxt is not None:
            groups.setdefault(nxt, []).append(shard)
            tried.add((nxt, shard))
    return groups


ShardAnswers = dict[int, tuple[str, list[tuple[np.ndarray, np.ndarray]]]]


def wanted_ids(answers: ShardAnswers, queries: int, k: int) -> dict[int, set[int]]:
    """Per shard, the chunk ids that may be in some query's merged top-k (``cut_candidates``).
    Blocking (numpy over every hit)."""
    wanted: dict[int, set[int]] = {shard: set() for shard in answers}
    for q in range(queries):
        rows = [(shard, rows[q]) for shard, (_, rows) in answers.items()]
        keep = cut_candidates([scores for _, (_, scores) in rows], k)
        for (shard, (ids, _)), mask in zip(rows, keep, strict=True):
            wanted[shard].update(ids[mask].tolist())
    return wanted


#: One query's picked hits: the chunk, its score, its shard and the peer that answered it.
_Picked = list[tuple[FetchedChunk, float, int, str]]


def merged_results(answers: ShardAnswers, fetched: dict[int, dict[int, FetchedChunk]],
                   queries: int, k: int, *, per_doc: bool, text: bool,
                   missing: list[int]) -> list[dict[str, Any]]:
    """Each query's merged top-k as API hits (blocking). Only the candidates at the cut
    (``cut_candidates``) are looked at; without tied scores among them the order is by score
    alone (a numpy sort), with ties it is :func:`merge_topk`'s full key."""
    sources = list(answers.items())
    if not sources:  # no shard answered: every query's answer is empty (and partial)
        return [{"hits": [], "partial": True, "missing_shards": missing} for _ in range(queries)]
    results = []
    for q in range(queries):
        picked = _query_top(sources, fetched, q, k, per_doc=per_doc)
        hits = []
        for chunk, score, shard, peer in picked:
            hit: dict[str, Any] = {"doc_id": chunk.doc_id, "chunk": chunk.chunk, "score": score}
            if text:
                hit["text"], hit["metadata"] = chunk.text, dict(chunk.metadata)
            hit["shard"], hit["peer"] = shard, peer
            hits.append(hit)
        results.append({"hits": hits, "partial": bool(missing), "missing_shards": missing})
    return results


def _query_top(sources: list[tuple[int, tuple[str, list[tuple[np.ndarray, np.ndarray]]]]],
               fetched: dict[int, dict[int, FetchedChunk]], q: int, k: int, *,
               per_doc: bool) -> _Picked:
    """Query ``q``'s top ``k`` over every shard's answer (see :func:`merged_results`)."""
    keep = cut_candidates([rows[q][1] for _, (_, rows) in sources], k)
    ids = np.concatenate([rows[q][0][m] for (_, (_, rows)), m in zip(sources, keep,
                                                                      strict=True)])
    scores = np.concatenate([rows[q][1][m] for (_, (_, rows)), m in zip(sources, keep,
                                                                         strict=True)])
    origin = np.repeat(np.arange(len(sources)), [int(m.sum()) for m in keep])
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    picked: _Picked = []
    if len(order) > 1 and bool(np.any(ranked[1:] == ranked[:-1])):
        lists = [[ShardHit(c.doc_id, c.chunk, float(scores[n]), sources[o][0],
                           sources[o][1][0])
                  for n, o in enumerate(origin.tolist())
                  if (c := fetched[sources[o][0]].get(int(ids[n]))) is not None]]
        for h in merge_topk(lists, k, per_doc=per_doc):
            chunk = fetched[h.shard][chunk_faiss_id(h.doc_id, h.chunk)]
            picked.append((chunk, h.score, h.shard, h.peer))
        return picked
    seen: set[str] = set()
    for n in order.tolist():
        shard, (peer, _) = sources[int(origin[n])]
        chunk_or_none = fetched[shard].get(int(ids[n]))
        if chunk_or_none is None or (per_doc and chunk_or_none.doc_id in seen):
            continue  # deleted since the search; a second chunk of a document
        seen.add(chunk_or_none.doc_id)
        picked.append((chunk_or_none, float(scores[n]), shard, peer))
        if len(picked) == k:
            break
    return picked


def _text_size(doc: Any) -> int:
    if not isinstance(doc, dict):
        return 1
    return 1 + sum(len(v) for v in (doc.get("title"), doc.get("text")) if isinstance(v, str))


def ingest_batches(docs: list[Any], embedders: int) -> list[list[Any]]:
    """``docs`` cut into contiguous batches for ``embed_chunks``: about ``INGEST_BATCH``
    documents each, their number a multiple of ``embedders`` (when there are documents
    enough), and of about equal text (what the embedding time grows with).

    Why: the embedders work on one request's batches at once; batches of 16 documents, 4 of
    them for 3 embedders, kept one embedder busy twice as long as the others, which then
    idled until the request's last batch was done (three nodes ingested at 0.52x the model)."""
    if not docs:
        return []
    count = -(-len(docs) // INGEST_BATCH)
    if embedders > 1 and len(docs) >= embedders:
        count = -(-count // embedders) * embedders
    count = min(count, len(docs))
    sizes = [_text_size(doc) for doc in docs]
    total = sum(sizes)
    batches: list[list[Any]] = []
    start, seen = 0, 0
    for n in range(1, count):
        # the end of batch n: where the running text size passes n/count of the total,
        # leaving at least one document for every batch still to come
        target = total * n / count
        end = start + 1
        seen += sizes[start]
        while end < len(docs) - (count - n) and seen + sizes[end] <= target:
            seen += sizes[end]
            end += 1
        batches.append(docs[start:end])
        start = end
    batches.append(docs[start:])
    # a few huge documents can leave many small ones to one batch: no batch is longer than
    # twice the usual (an embed_chunks request has a bounded number of documents)
    return [batch[at:at + INGEST_BATCH] if len(batch) > 2 * INGEST_BATCH else batch
            for batch in batches
            for at in range(0, len(batch) if len(batch) > 2 * INGEST_BATCH else 1,
                            INGEST_BATCH)]


class EmbedderSpread:
    """The embedding peers one ingest keeps busy, and how many of its batches each has.

    The dispatcher ranks peers by the load their records advertised, which is seconds old:
    an ingest that sent its batches by that rank alone piled them on one peer while another
    idled. Here each batch goes first to the peer with the fewest of this ingest's batches
    (the dispatcher's rank breaks ties, and stays the order of the fallbacks)."""

    def __init__(self) -> None:
        self._batches: dict[str, int] = {}

    def order(self, ranked: list[Candidate]) -> list[Candidate]:
        rank = {c.peer_id: n for n, c in enumerate(ranked)}
        return sorted(ranked, key=lambda c: (self._batches.get(c.peer_id, 0), rank[c.peer_id]))

    @contextlib.contextmanager
    def running(self, peer: str) -> Iterator[None]:
        self._batches[peer] = self._batches.get(peer, 0) + 1
        try:
            yield
        finally:
            self._batches[peer] -= 1
            if not self._batches[peer]:
                del self._batches[peer]


def replication_notes(replicas: int, quorum: int, live: int) -> list[str]:
    """What a user should know about ``replicas`` copies with ``quorum`` on ``live`` index
    peers: more replicas than peers is allowed (the missing copies appear when nodes join)
    but is said plainly, and a quorum the peers cannot reach blocks every write."""
    notes = []
    if replicas > live:
        notes.append(f"{replicas} replicas asked, but only {live} live index peer"
                     f"{'' if live == 1 else 's'}: each shard has {live} cop"
                     f"{'y' if live == 1 else 'ies'} until more nodes start with --index "
                     "(sync then brings the new replicas up)")
    if quorum > live:
        notes.append(f"a write needs {quorum} durable replicas and only {live} index "
                     f"peer{' is' if live == 1 else 's are'} live: ingest fails until "
                     "another --index node starts (or lower the replication)")
    return notes


def write_quorum_problem(definition: CollectionDef, live: int) -> str | None:
    """Why no write to ``definition`` can be acknowledged with ``live`` index peers, or None:
    every shard has min(R, live) owners, so all or none reach the quorum."""
    owners = min(definition.replicas, live)
    if owners >= definition.quorum:
        return None
    lower = max(1, owners)
    return (f"collection {definition.name} needs {definition.quorum} durable replicas per "
            f"write (replicas {definition.replicas}, write quorum {definition.quorum}) and "
            f"only {live} index peer{'' if live == 1 else 's'} {'is' if live == 1 else 'are'}"
            f" live: start another node with --index, or lower the replication: calinode "
            f"collections update {definition.name} --replicas {lower}")
