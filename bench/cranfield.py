"""The Cranfield collection as BEIR-style JSONL, and nDCG@10 of a calinode collection on it.

    python bench/cranfield.py export OUT_DIR            # corpus.jsonl + queries.jsonl
    python bench/cranfield.py ndcg RESULTS.jsonl        # results of calinode search --queries
    python bench/cranfield.py models HOME NAME...       # each installed embedder alone

Documents are ``{"_id", "title", "text"}``; queries ``{"_id", "text"}`` with ``_id`` the
query's position (1..225), which is how ``cranqrel`` numbers them. Gain = 5 - grade.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, Protocol

#: The collection's folder: ``$CALINODE_CRANFIELD``, else ``shared/data/cranfield`` beside
#: the checkout (where the project's shared files sit).
DATA = Path(os.environ.get("CALINODE_CRANFIELD")
            or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cranfield")


def _records(path: Path) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    field = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^\.([ITABW])(?:\s+(\d+))?\s*$", line)
        if match and match.group(1) == "I":
            records.append({"I": match.group(2)})
            field = None
        elif match:
            field = match.group(1)
            records[-1].setdefault(field, "")
        elif field is not None:
            records[-1][field] += line.strip() + " "
    return [{k: v.strip() for k, v in r.items()} for r in records]


def corpus(data: Path = DATA) -> list[dict[str, Any]]:
    return [{"_id": r["I"], "title": r.get("T", ""), "text": r.get("W", "") or r.get("T", "")}
            for r in _records(data / "cran.all.1400")]


def queries(data: Path = DATA) -> list[dict[str, str]]:
    return [{"_id": str(position), "text": r.get("W", "")}
            for position, r in enumerate(_records(data / "cran.qry"), start=1)]


def qrels(data: Path = DATA) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (data / "cranqrel").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and int(parts[2]) > 0:
            judged[parts[0]][parts[1]] = 5 - int(parts[2])
    return dict(judged)


def ndcg_at_10(ranked: dict[str, list[str]], judged: dict[str, dict[str, int]]) -> float:
    scores = []
    for query_id, gains in judged.items():
        docs = ranked.get(query_id, [])[:10]
        dcg = sum(gains.get(d, 0) / math.log2(i + 2) for i, d in enumerate(docs))
        ideal = sorted(gains.values(), reverse=True)[:10]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        scores.append(dcg / idcg if idcg else 0.0)
    return sum(scores) / len(scores)


class Embeds(Protocol):
    """What :func:`embedder_ndcg` needs of a model: calinode's ``OnnxEmbedder.embed``."""

    def embed(self, texts: list[str], *, input_type: Literal["query", "passage"]) -> Any: ...


def embedder_ndcg(embedder: Embeds, data: Path = DATA) -> float:
    """nDCG@10 of ``embedder`` alone on Cranfield, without a node: every non-empty document
    (title and text, one vector each, cut to the model's max_tokens) ranked by inner product
    with each query's vector. How the INT8 defaults were compared with the float model
    (models/prepare/minilm.py): the same documents and queries for every model, so only the
    model differs. Blocking; about a minute a model on 2 cores."""
    import numpy as np

    docs = [d for d in corpus(data) if d["text"].strip()]
    asked = queries(data)
    doc_vectors = embedder.embed([f"{d['title']} {d['text']}" for d in docs],
                                 input_type="passage").vectors
    query_vectors = embedder.embed([q["text"] for q in asked], input_type="query").vectors
    scores = query_vectors @ doc_vectors.T
    ranked = {q["_id"]: [docs[j]["_id"] for j in np.argsort(-scores[i], kind="stable")[:10]]
              for i, q in enumerate(asked)}
    return ndcg_at_10(ranked, qrels(data))


def doc_ranking(hits: list[dict[str, Any]]) -> list[str]:
    """Chunk hits -> documents in order of their best chunk."""
    seen: list[str] = []
    for hit in hits:
        if hit["doc_id"] not in seen:
            seen.append(hit["doc_id"])
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export")
    export.add_argument("out")
    ndcg = sub.add_parser("ndcg")
    ndcg.add_argument("results")
    models = sub.add_parser("models")
    models.add_argument("home", help="a models home (e.g. ~/.calinode/models)")
    models.add_argument("names", nargs="+")
    args = parser.parse_args()
    if args.command == "export":
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, rows in (("corpus.jsonl", corpus()), ("queries.jsonl", queries())):
            (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {out}/corpus.jsonl and {out}/queries.jsonl")
    elif args.command == "models":
        from calinode.models.embedder import OnnxEmbedder
        from calinode.models.registry import ModelRegistry

        registry = ModelRegistry(Path(args.home))
        for name in args.names:
            embedder = OnnxEmbedder(registry.get(name), registry.folder(name), threads=2)
            print(f"{name}: nDCG@10 = {embedder_ndcg(embedder):.4f}")
    else:
        ranked = {}
        for line in Path(args.results).read_text().splitlines():
            row = json.loads(line)
            ranked[row["query_id"]] = doc_ranking(row["hits"])
        print(f"nDCG@10 = {ndcg_at_10(ranked, qrels()):.4f} over {len(qrels())} judged queries")


if __name__ == "__main__":
    main()
