"""The in-browser embedding (node/dashboard/static/embed.js) in a real headless Chromium against
a real daemon with the default INT8 embedder: the browser fetches the model and tokenizer from
the node by sha256, tokenizes with the model's own tokenizer.json exactly as the node does
(token ids compared with Hugging Face ``tokenizers`` on tricky texts), runs onnxruntime-web's
WASM build served by the node, and its vector matches the node's ``/v1/embeddings`` vector
(cosine >= 0.999, printed per sentence). A search by the browser's vector returns the hits of a
search by the text. Nothing is fetched from anywhere but the node, and a second page load
takes the model from the browser's Cache API, not the network.

The page is a tiny one of this test's own, answered at the node's origin (Playwright routes
``/__webembed_test__/``): the API refuses cross-origin requests, so the page must share the
node's origin. ``embed.js`` and its vendored onnxruntime-web come from the node when it serves
the dashboard's static folder at ``/static/``, else from the package's folder that ships in
the wheel (the same files).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import calinode.node
from calinode.models.embedder import TOKENIZER_FILE, load_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from daemon_harness import Swarm

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "minilm-l6-int8"
STATIC = Path(calinode.node.__file__).resolve().parent / "dashboard" / "static"
TEST_PREFIX = "/__webembed_test__/"

SENTENCES = [
    "How do shards move when a new peer joins the swarm?",
    "The quick brown fox jumps over the lazy dog.",
    "Crème brûlée à la façon de Paris, naïve café résumé",
    "Replicas converge by comparing shard digests; acknowledged writes are durable.",
    "北京欢迎你 and 東京 in one query",
    "what is retrieval-augmented generation (RAG)???",
]
#: texts that take every path of the tokenizer: accents, CJK, controls, punctuation, added
#: tokens, long words, truncation at max_tokens
TRICKY = [
    "tab\there\nnewline\r\x0bvt\x0cff", "İstanbul ΣΊΣΥΦΟΣ straße ǅ ẞ Å Ω K",
    "don't stop-believing... #hashtag @user $100 50% a+b=c <tag> ^_^ ~`|",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "[CLS] inner [SEP] and [MASK] or [UNK] tokens x[PAD]y",
    "emoji 😀🎉 and zero\u200bwidth \ufeffbom \x00nul \ufffd", "a" * 120 + " b",
    "«quotes» „german“ — dash \u2013 endash … ellipsis ‰ € £ © ™ §",
    "ﬁ ligature \u210c Ⅻ ① \U0001d400", "Ñandú \u0301combining x\u0085y\u00a0z\u3000w\u2028v",
    "Ελληνικά ή Русский язык 한국어 ไทย", " ".join(f"token{i}" for i in range(400)),
]
DOCS = [
    {"_id": "shards", "title": "Shards", "text": "A collection is split into shards. When a "
     "new peer joins the swarm, placement moves as few shards as possible to it."},
    {"_id": "replicas", "title": "Replicas", "text": "Replicas of a shard converge by "
     "comparing digests, and a write is acknowledged once durable on a quorum."},
    {"_id": "fox", "title": "Fox", "text": "The quick brown fox jumps over the lazy dog in "
     "the garden, then sleeps under a tree."},
    {"_id": "dessert", "title": "Dessert", "text": "Crème brûlée is a French dessert of rich "
     "custard topped with caramelized sugar."},
    {"_id": "rag", "title": "RAG", "text": "Retrieval-augmented generation retrieves "
     "passages from an index and gives them to a language model as context."},
    {"_id": "cities", "title": "Cities", "text": "Beijing and Tokyo are the capitals of "
     "China and Japan."},
    {"_id": "ports", "title": "Ports", "text": "The local HTTP API listens on 127.0.0.1 and "
     "needs a bearer token."},
]

PAGE = """<!doctype html><meta charset="utf-8"><title>embed.js test</title>
<script type="module">
import { embedQuery, BertWordPiece } from "./static/embed.js";
window.embedQuery = embedQuery;
window.BertWordPiece = BertWordPiece;
document.title = "ready";
</script>
"""

EMBED = """async ([model, texts]) => {
  const out = [];
  for (const text of texts) {
    const r = await window.embedQuery("", model, text);
    out.push({vector: Array.from(r.vector), sha256: r.sha256});
    const line = document.createElement("pre");  // for the screenshot
    line.textContent = `${r.sha256.slice(0, 12)} [${Array.from(r.vector.slice(0, 4),
      (x) => x.toFixed(4)).join(", ")}, ...] ${text}`;
    document.body.append(line);
  }
  return out;
}"""

TOKENIZE = """async ([sha, maxTokens, texts]) => {
  const spec = await (await fetch(`/v1/models/${sha}/tokenizer`)).json();
  const tokenizer = new window.BertWordPiece(spec, maxTokens);
  return texts.map((t) => tokenizer.encode(t));
}"""


def _wait_for_model(client: httpx.Client, peer_id: str) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listing = client.get("/v1/models")
        if listing.status_code == 200:
            for row in listing.json()["data"]:
                if row["id"] == MODEL and peer_id in row["peers"]:
                    return str(row["sha256"])
        time.sleep(0.2)
    raise AssertionError(f"{MODEL} never loaded")


def _static_route(node_serves: bool, origin: str) -> Any:
    def fulfil(route: Any) -> None:
        path = route.request.url.removeprefix(origin + TEST_PREFIX).split("?")[0]
        if path == "page.html":
            route.fulfill(status=200, content_type="text/html", body=PAGE)
        elif node_serves and path.startswith("static/"):
            route.continue_(url=f"{origin}/{path}")
        else:
            file = (STATIC / path.removeprefix("static/")).resolve()
            if not path.startswith("static/") or not file.is_relative_to(STATIC) or \
                    not file.is_file():
                route.fulfill(status=404, body="not found")
                return
            kind = {".js": "text/javascript", ".mjs": "text/javascript",
                    ".wasm": "application/wasm"}.get(file.suffix, "application/octet-stream")
            route.fulfill(status=200, content_type=kind, body=file.read_bytes())
    return fulfil


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_browser_embeds_a_query_as_the_node_does_and_searches_by_it(
        swarm: Swarm, prepared_models: Path, tmp_path: Path, browser: Any) -> None:
    daemon = swarm.daemon("web", models=prepared_models).start("--index")
    origin = f"http://{daemon.info['api']}"
    with httpx.Client(base_url=origin, headers=daemon.auth, timeout=120) as client:
        sha = _wait_for_model(client, daemon.peer_id)
        created = client.post("/v1/collections", json={"name": "notes", "model": MODEL,
                                                       "shards": 2})
        assert created.status_code == 200, created.text
        ingested = client.post("/v1/ingest", json={"collection": "notes", "docs": DOCS})
        assert ingested.status_code == 200 and not ingested.json()["failed"], ingested.text
        node_serves = client.get("/static/embed.js").status_code == 200
        want = client.post("/v1/embeddings", json={"model": MODEL, "input": SENTENCES,
                                                   "input_type": "query"}).json()
        node_vectors = np.asarray([row["embedding"] for row in want["data"]], np.float32)
        manifest = client.get(f"/v1/models/{sha}/manifest").json()
        graph = manifest["browser_graph"]
        graph_route = "file" if graph["sha256"] == sha else "browser-graph"

        requests: list[str] = []
        context = browser.new_context(extra_http_headers=daemon.auth)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: print("console:", m.text))
        page.route(f"{origin}{TEST_PREFIX}**", _static_route(node_serves, origin))
        started = time.monotonic()
        page.goto(f"{origin}{TEST_PREFIX}page.html")
        page.wait_for_function("document.title === 'ready'")
        got = page.evaluate(EMBED, [MODEL, SENTENCES])
        first_load = time.monotonic() - started
        tokens = page.evaluate(TOKENIZE, [sha, manifest["max_tokens"],
                                          SENTENCES + TRICKY])
        page.screenshot(path=str(tmp_path / "browser-embedding.png"))
        fetched_before_reload = list(requests)
        requests.clear()
        page.reload()
        page.wait_for_function("document.title === 'ready'")
        started = time.monotonic()
        again = page.evaluate(EMBED, [sha, SENTENCES[:1]])
        cached_embed = time.monotonic() - started

        browser_vectors = np.asarray([row["vector"] for row in got], np.float32)
        assert {row["sha256"] for row in got} == {sha}
        cosines = [_cosine(b, n) for b, n in zip(browser_vectors, node_vectors, strict=True)]
        print(f"\nbrowser vs node ({MODEL}, sha256 {sha[:12]}, onnxruntime-web "
              f"{(STATIC / 'vendor/onnxruntime-web/VERSION').read_text().strip()}): "
              f"first load + {len(SENTENCES)} embeds {first_load:.2f} s, a cached embed "
              f"after reload {cached_embed:.2f} s; embed.js served by "
              f"{'the node' if node_serves else 'the test (package folder)'}; the browser ran "
              f"/v1/models/{sha[:12]}.../{graph_route} (emulating {graph['emulates']})")
        for text, cosine, b, n in zip(SENTENCES, cosines, browser_vectors, node_vectors,
                                      strict=True):
            print(f"  cosine {cosine:.7f}  max|diff| {np.abs(b - n).max():.2e}  {text!r}")
        print(f"  min cosine {min(cosines):.7f}, mean {np.mean(cosines):.7f}")
        assert min(cosines) >= 0.999, cosines
        assert np.allclose(np.linalg.norm(browser_vectors, axis=1), 1.0, atol=1e-5)
        assert _cosine(np.asarray(again[0]["vector"], np.float32), browser_vectors[0]) > 0.99999

        tokenizer, _ = load_tokenizer(prepared_models / MODEL / TOKENIZER_FILE,
                                      manifest["max_tokens"])
        python_ids = [e.ids for e in tokenizer.encode_batch(SENTENCES + TRICKY)]
        mismatched = [text for text, js, py in zip(SENTENCES + TRICKY, tokens, python_ids,
                                                   strict=True) if js != py]
        assert not mismatched, mismatched

        assert all(url.startswith(origin + "/") for url in fetched_before_reload + requests), \
            [u for u in fetched_before_reload + requests if not u.startswith(origin + "/")]
        assert any(url.endswith(f"/v1/models/{sha}/{graph_route}")
                   for url in fetched_before_reload)
        assert not any(url.endswith(f"/v1/models/{sha}/{graph_route}") for url in requests), \
            "after a reload the model must come from the browser's cache"

        for text, vector in zip(SENTENCES, browser_vectors, strict=True):
            by_text = client.post("/v1/search", json={"collection": "notes", "query": text,
                                                      "k": 4}).json()[0]
            by_vector = client.post("/v1/search", json={
                "collection": "notes", "vector": vector.tolist(), "model_sha256": sha,
                "k": 4}).json()[0]
            assert not by_text["partial"] and not by_vector["partial"]
            assert [(h["doc_id"], h["chunk"]) for h in by_vector["hits"]] == [
                (h["doc_id"], h["chunk"]) for h in by_text["hits"]], text
            gap = max(abs(a["score"] - b["score"])
                      for a, b in zip(by_text["hits"], by_vector["hits"], strict=True))
            print(f"  search {text[:40]!r}: same {len(by_text['hits'])} hits "
                  f"({by_text['hits'][0]['doc_id']} first), max score gap {gap:.2e}")
        (tmp_path / "browser-embedding.json").write_text(json.dumps(
            {"sha256": sha, "cosines": cosines}, indent=2))
