"""Ingest vs the raw embedder, and the sharded index vs one in-process FAISS index, in one run.

    python bench/bench_index.py [--threads 1] [--docs 1400] [--vectors 100000]
                                [--queries 200] [--models-home HOME] [--skip-ingest|--ingest-only]

1. Ingest (real embeddings, minilm-l6-int8): Cranfield's documents through ``calinode ingest``
   into a swarm of 1 index node and of 3 index nodes (16 shards, R=min(2, nodes)), every
   daemon started with ``--threads T``: chunks/s, beside the raw embedder (``OnnxEmbedder``
   in this process, no node) embedding the very same chunks (cut by the same code with the
   collection's default window) with the same thread count: ``T`` for one node, and
   ``min(3 T, cores)`` for three nodes (three daemons of ``T`` threads share this machine's
   cores). The ratio says how close ingest comes to the model's own speed.
2. Search (100k synthetic 384-d unit vectors, k=10, one query per request): p50/p95 of a single
   in-process FAISS ``IndexFlatIP`` vs calinode with 1 index node vs 3 index nodes (16 shards,
   R=2), measured from a coordinating node inside the swarm, and recall@10 against FAISS.
   The vectors are written through the real ``shard.write`` jobs; the queries go through the
   real search path (plan, hedged shard requests, exact merge). Then whole batch requests
   (100 queries a request at k=10 and at k=100, texts fetched) against the flat index's
   search of the same 100 queries: p50 ms a request, the ratio, recall@k.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cranfield
from bench_models import prepared_models_home, start_daemon

from calinode.models.embedder import OnnxEmbedder
from calinode.models.registry import ModelRegistry
from calinode.models.store.records import ChunkWrite, DocRecord
from calinode.node.config import NodeConfig
from calinode.node.daemon import Node, run_node
from calinode.node.index.chunking import chunk_text
from calinode.node.index.placement import shard_of
from calinode.node.ingest_input import make_document_text
from calinode.node.rag.write_quorum import DocSettlement

CALINODE = str(Path(sys.executable).with_name("calinode"))
DIM = 384
MODEL = "minilm-l6-int8"


def cli(home: Path, *args: str) -> Any:
    out = subprocess.run([CALINODE, *args, "--home", str(home), "--json"], check=True,
                         capture_output=True, text=True, timeout=1800).stdout
    return json.loads(out)


def swarm(work: Path, models: Path, count: int, *extra: str, threads: int = 1
          ) -> tuple[list[Any], Path]:
    procs, homes, bootstrap = [], [], []
    for i in range(count):
        home = work / f"n{i}"
        home.mkdir(parents=True)
        (home / "models").symlink_to(models, target_is_directory=True)
        proc, info = start_daemon(home, "--index", "--threads", str(threads), *extra,
                                  *bootstrap)
        bootstrap = bootstrap or ["--bootstrap", info["addrs"][0]]
        procs.append(proc)
        homes.append(home)
    deadline = time.monotonic() + 60
    while len([p for p in cli(homes[0], "peers") if p["alive"]]) < count:
        if time.monotonic() > deadline:
            raise SystemExit("swarm did not form")
        time.sleep(0.2)
    return procs, homes[0]


def stop(procs: list[Any]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: seconds the swarm is left alone after an ingest before its idle CPU is measured, and the
#: seconds measured
IDLE_SETTLE, IDLE_SPAN = 10.0, 30.0


def bench_ingest(work: Path, models: Path, corpus: Path, threads: int
                 ) -> dict[int, tuple[int, float, float, float]]:
    """Swarm size -> (chunks written, chunks/s, chunks per CPU second of all the daemons,
    CPU-s/s of all the daemons idle after the ingest) of ``calinode ingest``. CPU time is
    what a busy shared machine does not distort: wall time there measures the neighbours
    too. The idle cost is what the swarm spends holding the ingested collection (membership,
    replica sync) with nothing asked of it."""
    rates = {}
    for count in (1, 3):
        procs, home = swarm(work / f"ingest{count}", models, count, threads=threads)
        try:
            cli(home, "collections", "create", "cran", "--shards", "16", "--replicas",
                str(min(2, count)), "--model", MODEL)
            cpu = sum(cpu_seconds(p.pid) for p in procs)
            summary = cli(home, "ingest", str(corpus), "--collection", "cran")
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
            assert not summary["failed"], summary["failed"][:3]
            time.sleep(IDLE_SETTLE)
            idle = sum(cpu_seconds(p.pid) for p in procs)
            time.sleep(IDLE_SPAN)
            idle = (sum(cpu_seconds(p.pid) for p in procs) - idle) / IDLE_SPAN
            rates[count] = (summary["chunks"], summary["chunks"] / summary["seconds"],
                            summary["chunks"] / cpu, idle)
        finally:
            stop(procs)
    return rates


def corpus_chunks(embedder: OnnxEmbedder, docs: list[dict[str, Any]]) -> list[str]:
    """The chunks ``embed_chunks`` makes of ``docs`` with a collection's default window."""
    from calinode.protocol.collections import CollectionDef

    window = CollectionDef.__dataclass_fields__
    budget = min(int(window["chunk_tokens"].default), embedder.chunk_budget)
    overlap = int(window["chunk_overlap"].default)
    texts = [make_document_text(d.get("title"), d["text"]) for d in docs]
    return [c.text for text, spans in zip(texts, embedder.token_offsets(texts), strict=True)
            for c in chunk_text(text, offsets=spans, max_tokens=budget, overlap=overlap)]


def bench_embedder(models: Path, docs: list[dict[str, Any]], threads: int
                   ) -> tuple[int, float, float]:
    """(chunks, chunks/s, chunks per CPU second) of the raw embedder on the corpus' chunks
    (passages, as ingest embeds them)."""
    registry = ModelRegistry(models)
    embedder = OnnxEmbedder(registry.get(MODEL), registry.folder(MODEL), threads=threads)
    chunks = corpus_chunks(embedder, docs)
    embedder.embed(chunks[:8])  # warm-up, as a daemon's first batch is
    t0, cpu0 = time.perf_counter(), time.process_time()
    embedder.embed(chunks, input_type="passage")
    cpu = time.process_time() - cpu0
    return len(chunks), len(chunks) / (time.perf_counter() - t0), len(chunks) / cpu


def ingest_table(work: Path, models: Path, docs: list[dict[str, Any]], threads: int) -> None:
    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    cores = os.cpu_count() or 1
    raw = {1: bench_embedder(models, docs, threads),
           3: bench_embedder(models, docs, min(3 * threads, cores))}
    rates = bench_ingest(work, models, corpus, threads)
    print(f"ingest, Cranfield {len(docs)} documents, {MODEL}, daemons with --threads "
          f"{threads}, {cores} cores\n")
    print("| swarm | chunks | ingest chunks/s | raw embedder chunks/s (threads) | ratio | "
          "ingest chunks/CPU-s | raw chunks/CPU-s | CPU ratio | idle CPU-s/s |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, (chunks, rate, per_cpu, idle) in rates.items():
        raw_chunks, raw_rate, raw_per_cpu = raw[count]
        assert chunks == raw_chunks, (chunks, raw_chunks)  # the very same chunks
        embed_threads = threads if count == 1 else min(3 * threads, cores)
        name = f"{count} index node{'s' if count > 1 else ''} (16 shards, R={min(2, count)})"
        print(f"| {name} | {chunks} | {rate:.1f} | {raw_rate:.1f} ({embed_threads}) | "
              f"{rate / raw_rate:.2f}x | {per_cpu:.1f} | {raw_per_cpu:.1f} | "
              f"{per_cpu / raw_per_cpu:.2f}x | {idle:.3f} |")
    load = os.getloadavg()[0]
    print(f"\n(1-minute load average at the end: {load:.1f} on {cores} cores; the CPU "
          "columns hold on a busy machine, the wall-clock ones only on an idle one)\n")


#: batch searches measured beside the single queries: (k, queries per request)
BATCHES = ((10, 100), (100, 100))


async def bench_search(work: Path, models: Path, n: int, queries: int, count: int,
                       data: np.ndarray, qs: np.ndarray
                       ) -> tuple[list[float], np.ndarray, dict[int, tuple[list[float],
                                                                       np.ndarray]]]:
    procs, home = swarm(work / f"search{count}", models, count)
    try:
        cli(home, "collections", "create", "synthetic", "--shards", "16", "--replicas",
            str(min(2, count)), "--model", "minilm-l6-int8")
    except subprocess.CalledProcessError:
        stop(procs)
        raise
    info = json.loads((home / "node.json").read_text())
    config = NodeConfig(home=work / f"coord{count}", listen=("/ip4/127.0.0.1/tcp/0",),
                        api="127.0.0.1:0", bootstrap=(info["addrs"][0],), no_models=True)
    try:
        async with trio.open_nursery() as nursery:
            node: Node = await nursery.start(lambda task_status: run_node(
                config, handle_signals=False, announce=False, task_status=task_status))
            while ("synthetic" not in node.book.names()  # noqa: ASYNC110 - gossip
                   or len(node.coordinator.index_peers()) < count):
                await trio.sleep(0.2)
            coordinator = node.coordinator
            definition = node.book.get("synthetic")
            placement = coordinator.placement(definition)
            by_shard: dict[int, list[DocRecord]] = {}
            for i in range(n):
                doc_id = str(i)
                by_shard.setdefault(shard_of(doc_id, 16), []).append(DocRecord(
                    doc_id=doc_id, content_hash=f"{i:064x}", version=1, deleted=False,
                    chunks=[ChunkWrite(text=f"doc {i}", vector=data[i])]))
            for shard, docs in by_shard.items():
                for start_at in range(0, len(docs), 500):
                    outcomes: dict[int, list[DocSettlement]] = {}
                    await coordinator.writes.write_shard(definition, placement, shard,
                                                         docs[start_at:start_at + 500], outcomes)
                    assert all(d.acknowledged for d in outcomes[shard]), outcomes[shard][:3]
            await trio.sleep(3)  # let digests reach the coordinator
            latencies, found = [], np.zeros((queries, 10), dtype=np.int64)
            for q in range(queries):
                t0 = time.perf_counter()
                (row,) = await coordinator.search_vectors(definition, qs[q:q + 1], k=10,
                                                          timeout=30)
                latencies.append((time.perf_counter() - t0) * 1000)
                assert not row["partial"], row["missing_shards"]
                found[q] = [int(h["doc_id"]) for h in row["hits"]]
            batches: dict[int, tuple[list[float], np.ndarray]] = {}
            for k, size in BATCHES:  # whole requests of `size` queries (texts included)
                times, got = [], np.zeros((queries, k), dtype=np.int64)
                for start_at in range(0, queries - size + 1, size):
                    t0 = time.perf_counter()
                    rows = await coordinator.search_vectors(
                        definition, qs[start_at:start_at + size], k=k, timeout=300)
                    times.append((time.perf_counter() - t0) * 1000)
                    for q, row in enumerate(rows, start=start_at):
                        assert not row["partial"], row["missing_shards"]
                        got[q] = [int(h["doc_id"]) for h in row["hits"]]
                batches[k] = (times, got)
            nursery.cancel_scope.cancel()
    finally:
        stop(procs)
    return latencies, found, batches


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--models-home", help="a home whose models/ is already prepared")
    parser.add_argument("--threads", type=int, default=1,
                        help="compute threads of each daemon and of the raw embedder")
    parser.add_argument("--docs", type=int, default=1400, help="Cranfield documents to ingest")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--ingest-only", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="calinode-bench-index-"))
    models_home = prepared_models_home(args.models_home, work)
    models = models_home / "models"

    if not args.skip_ingest:
        docs = [d for d in cranfield.corpus() if d["text"].strip()][:args.docs]
        ingest_table(work, models, docs, args.threads)
    if args.ingest_only:
        return

    rng = np.random.default_rng(7)
    data = rng.standard_normal((args.vectors, DIM)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    qs = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    flat_ms, truth = [], np.zeros((args.queries, 10), dtype=np.int64)
    for q in range(args.queries):
        t0 = time.perf_counter()
        _, ids = flat.search(qs[q:q + 1], 10)
        flat_ms.append((time.perf_counter() - t0) * 1000)
        truth[q] = ids[0]
    rows = [("single in-process FAISS flat", flat_ms, 1.0)]
    batch_rows: list[tuple[str, int, float, float, float]] = []  # name, k, ms, ratio, recall
    flat_batch: dict[int, tuple[float, np.ndarray]] = {}
    for k, size in BATCHES:
        times, ids_k = [], np.zeros((args.queries, k), dtype=np.int64)
        for start_at in range(0, args.queries - size + 1, size):
            t0 = time.perf_counter()
            _, ids = flat.search(qs[start_at:start_at + size], k)
            times.append((time.perf_counter() - t0) * 1000)
            ids_k[start_at:start_at + size] = ids
        flat_batch[k] = (statistics.median(times), ids_k)
        batch_rows.append((f"single in-process FAISS flat, {size} queries a request", k,
                           statistics.median(times), 1.0, 1.0))
    for count in (1, 3):
        latencies, found, batches = trio.run(bench_search, work, models, args.vectors,
                                             args.queries, count, data, qs)
        recall = float(np.mean([len(set(found[q]) & set(truth[q])) / 10
                                for q in range(args.queries)]))
        name = (f"calinode, {count} index node{'s' if count > 1 else ''} "
                f"(16 shards, R={min(2, count)})")
        rows.append((name, latencies, recall))
        for k, size in BATCHES:
            times, got = batches[k]
            base_ms, base_ids = flat_batch[k]
            done = len(times) * size
            recall_k = float(np.mean([len(set(got[q]) & set(base_ids[q])) / k
                                      for q in range(done)]))
            batch_rows.append((f"{name}, {size} queries a request", k,
                               statistics.median(times), statistics.median(times) / base_ms,
                               recall_k))
    print(f"search, {args.vectors} synthetic 384-d vectors, k=10, {args.queries} single "
          "queries\n")
    print("| path | p50 ms | p95 ms | recall@10 |\n|---|---:|---:|---:|")
    for name, values, recall in rows:
        print(f"| {name} | {statistics.median(values):.2f} | {pct(values, 0.95):.2f} | "
              f"{recall:.3f} |")
    print("\nbatch search (whole requests, texts included; ratio: request time over the flat "
          "index's)\n")
    print("| path | k | p50 ms a request | ratio | recall@k |\n|---|---:|---:|---:|---:|")
    for name, k, ms, ratio, recall_k in batch_rows:
        print(f"| {name} | {k} | {ms:.1f} | {ratio:.1f}x | {recall_k:.3f} |")
    target = 2 * statistics.median(flat_ms) + 10
    print(f"\ntarget: 3-node p50 <= 2 x FAISS p50 + 10 ms = {target:.1f} ms; "
          f"measured {statistics.median(rows[-1][1]):.1f} ms")


if __name__ == "__main__":
    main()
