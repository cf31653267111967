"""Scale-out: 1 serving node vs 2, each pinned to its own core, in one run on this machine.

    python bench/bench_scale.py [--rounds 3] [--texts 4096] [--gen-tokens 96] [--models-home H]

Every node is a real ``calinode start`` process pinned with ``taskset`` to one core, with one
model thread (``--threads 1``: ONNX Runtime's intra-op threads and llama.cpp's threads). The
coordinator (no models, ``--index``: it holds the benchmark collection's shards) and this
client run on core 0 in both setups, so the 2-node figure pays for them on a core that also
serves:

- 1 node: coordinator + client on core 0, serving node E1 on core 1;
- 2 nodes: the same, plus serving node E2 on core 0.

Measured, for each setup: texts/s of a ``--texts`` embed (64-token sentences, sent as
requests of 2048, the API's largest), Cranfield ingest chunks/s (``bench/cranfield.py``,
a fresh collection each round), and aggregate tokens/s of 4 concurrent greedy generations of
``--gen-tokens`` tokens; medians of ``--rounds`` after a warm-up. Also the coordinator's CPU
time per embedded text and per generated token (``/proc/PID/stat``, its idle background
taken off), which bounds what one
coordinator can feed, and a model of N machines (:func:`predict`) checked against the 2-node
figure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import sentences
from cranfield import corpus

CALINODE = str(Path(sys.executable).with_name("calinode"))
EMBED_MODEL, GEN_MODEL = "minilm-l6-int8", "smollm2-135m"
API_BATCH = 2048  # the most texts one /v1/embed request may carry (Limits.max_batch)
GEN_CONCURRENCY = 4
#: essays: each runs to ``--gen-tokens`` (short answers that stopped at 20-40 tokens made the
#: figure depend on which two prompts met on one node, not on the nodes)
PROMPTS = ["Write a long, detailed essay on how a wing makes lift.",
           "Write a long, detailed essay on heat transfer in a boundary layer.",
           "Write a long, detailed essay on shock waves in supersonic flow.",
           "Write a long, detailed essay on why swept wings delay transonic drag rise."]
#: 1 Gbit/s Ethernet, the network the N-machine model assumes (bytes/s)
NETWORK_BYTES_PER_S = 125e6
#: bytes a text costs on the wire, there and back: ~330 characters out, 384 float32 back
#: plus framing (measured from the job frames of a 2048-text embed: ~1.9 KB per text)
BYTES_PER_TEXT = 1900.0
#: bytes a streamed token costs on the wire: a text piece, its token id, framing
BYTES_PER_TOKEN = 64.0


@dataclass
class Node:
    name: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]
    token: str

    def client(self, timeout: float = 600) -> httpx.Client:
        return httpx.Client(base_url=f"http://{self.info['api']}", timeout=timeout,
                            headers={"Authorization": f"Bearer {self.token}"})

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(work: Path, name: str, core: int, models: Path | None, *extra: str) -> Node:
    home = work / name
    home.mkdir(parents=True)
    if models is not None:
        (home / "models").symlink_to(models, target_is_directory=True)
    argv = ["taskset", "-c", str(core), CALINODE, "start", "--home", str(home), "--listen",
            "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0", "--threads", "1",
            *([] if models is not None else ["--no-models"]), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=(work / f"{name}.log").open("wb"))
    deadline = time.monotonic() + 600
    while not (home / "node.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"node {name} failed; see {work}/{name}.log")
        time.sleep(0.1)
    info = json.loads((home / "node.json").read_text())
    return Node(name, proc, info, (home / "api.token").read_text().strip())


def wait_for_servers(coordinator: Node, servers: list[Node]) -> None:
    wanted = {s.info["peer_id"] for s in servers}
    deadline = time.monotonic() + 120
    with coordinator.client(30) as client:
        while time.monotonic() < deadline:
            ready = {p["peer_id"] for p in client.get("/v1/peers").json()
                     if p["alive"] and p["capabilities"]["embed"]
                     and p["capabilities"]["generate"]}
            if wanted <= ready:
                return
            time.sleep(0.2)
    raise SystemExit("the coordinator never saw every serving node")


def idle_cpu_rate(node: Node, seconds: float = 5.0) -> float:
    """CPU seconds per second ``node`` spends with no request (heartbeats, records): taken
    off its CPU time during a measurement, which on a slow, shared machine is long enough
    for that background to look like a cost per text."""
    cpu0, wall0 = node.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (node.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)


def timed(fn: Callable[[], int], rounds: int, *, warm_up: bool = True) -> tuple[float, int]:
    """Median items/s of ``fn`` (which returns its item count), after one warm-up run."""
    if warm_up:
        fn()
    rates, items = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        items = fn()
        rates.append(items / (time.perf_counter() - started))
    return statistics.median(rates), items


def embed_texts(client: httpx.Client, texts: list[str]) -> int:
    for at in range(0, len(texts), API_BATCH):
        response = client.post("/v1/embed", json={"texts": texts[at:at + API_BATCH],
                                                  "model": EMBED_MODEL, "timeout": 600})
        response.raise_for_status()
    return len(texts)


class Ingester:
    def __init__(self, client: httpx.Client, docs: list[dict[str, Any]]) -> None:
        self.client, self.docs, self.round = client, docs, 0

    def __call__(self) -> int:
        self.round += 1
        name = f"cran{self.round}"
        self.client.post("/v1/collections", json={
            "name": name, "model": EMBED_MODEL, "replicas": 1, "shards": 2}).raise_for_status()
        response = self.client.post("/v1/ingest", json={"collection": name, "docs": self.docs},
                                    timeout=900)
        response.raise_for_status()
        summary = response.json()
        if summary.get("failed"):
            raise SystemExit(f"ingest failed: {summary['failed'][:3]}")
        return int(summary["chunks"])


def generate_concurrently(api: str, token: str, tokens: int,
                          served_by: list[str]) -> int:
    """``GEN_CONCURRENCY`` greedy generations at once; returns completion tokens in all
    (and appends the peer that served each to ``served_by``)."""
    counts: list[int] = []
    errors: list[BaseException] = []

    def one(prompt: str) -> None:
        try:
            with httpx.Client(base_url=f"http://{api}", timeout=600,
                              headers={"Authorization": f"Bearer {token}"}) as client:
                response = client.post("/v1/generate", json={  # a chat turn: smollm2-135m
                    # is an instruct model; a bare prompt often ends at once
                    "model": GEN_MODEL, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": tokens,
                    "temperature": 0.0, "seed": 7})
                response.raise_for_status()
                reply = response.json()
                counts.append(int(reply["usage"]["completion_tokens"]))
                served_by.append(reply["served_by"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(PROMPTS[i % len(PROMPTS)],))
               for i in range(GEN_CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


@dataclass
class Figures:
    embed: float  # texts/s
    ingest: float  # chunks/s
    generate: float  # tokens/s, aggregate
    coordinator_us_per_text: float
    coordinator_us_per_token: float
    served: dict[str, int]  # generations per serving node in the last round
    generated: int  # tokens in the last round


def measure(work: Path, models: Path, servers: int, args: argparse.Namespace,
            docs: list[dict[str, Any]]) -> Figures:
    nodes: list[Node] = []
    try:
        coordinator = start(work, f"coord{servers}", 0, None, "--index")
        nodes.append(coordinator)
        boot = ("--bootstrap", coordinator.info["addrs"][0])
        cores = [1, 0][:servers]
        serving = [start(work, f"serve{servers}-{n}", core, models, *boot)
                   for n, core in enumerate(cores)]
        nodes.extend(serving)
        wait_for_servers(coordinator, serving)
        texts = sentences(args.texts)
        idle = idle_cpu_rate(coordinator)
        with coordinator.client() as client:
            cpu0, wall0 = coordinator.cpu_seconds(), time.perf_counter()
            embed_rate, _ = timed(lambda: embed_texts(client, texts), args.rounds)
            busy = coordinator.cpu_seconds() - cpu0 - idle * (time.perf_counter() - wall0)
            cpu_per_text = max(0.0, busy) / ((args.rounds + 1) * len(texts))
            # the models are warm from the embeds: an ingest round is long, none is wasted
            ingest_rate, _ = timed(Ingester(client, docs), max(1, args.rounds - 1),
                                   warm_up=False)
        api, token = coordinator.info["api"], coordinator.token
        cpu0, wall0 = coordinator.cpu_seconds(), time.perf_counter()
        generated = [0]
        served_by: list[str] = []

        def generate() -> int:
            served_by.clear()
            generated[0] += (count := generate_concurrently(api, token, args.gen_tokens,
                                                            served_by))
            return count

        gen_rate, last_tokens = timed(generate, max(1, args.rounds - 1))
        busy = coordinator.cpu_seconds() - cpu0 - idle * (time.perf_counter() - wall0)
        cpu_per_token = max(0.0, busy) / max(1, generated[0])
        served = {node.name: served_by.count(node.info["peer_id"]) for node in serving}
        return Figures(embed_rate, ingest_rate, gen_rate, cpu_per_text * 1e6,
                       cpu_per_token * 1e6, served, last_tokens)
    finally:
        for node in nodes:
            node.proc.terminate()
        for node in nodes:
            try:
                node.proc.wait(30)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()


def predict(n: int, node_rate: float, coordinator_s_per_item: float,
            bytes_per_item: float = BYTES_PER_TEXT,
            network_bytes_per_s: float = NETWORK_BYTES_PER_S,
            slowest_share: float = 1.0) -> tuple[float, str]:
    """Items/s of ``n`` serving machines and what limits it (a back-of-envelope model).

    Each machine serves ``node_rate`` (the pull-based queue keeps every one busy; a slow one
    only adds its own rate, ``slowest_share`` of a fast one's, and its tail batch is declined
    or hedged, so it never sets the pace). The coordinator spends ``coordinator_s_per_item``
    CPU seconds per item on one core (framing, msgpack, numpy, the API's JSON), so it feeds
    at most ``1 / coordinator_s_per_item`` items/s; the network carries at most
    ``network_bytes_per_s / bytes_per_item``. Throughput is the least of the three."""
    workers = node_rate * (n - 1 + slowest_share)
    coordinator = 1 / coordinator_s_per_item if coordinator_s_per_item > 0 else float("inf")
    network = network_bytes_per_s / bytes_per_item
    limits = {"the serving nodes": workers, "the coordinator": coordinator,
              "the network": network}
    limit = min(limits, key=lambda k: limits[k])
    return limits[limit], limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=4096)
    parser.add_argument("--gen-tokens", type=int, default=96)
    parser.add_argument("--ingest-docs", type=int, default=0,
                        help="ingest only the first N Cranfield documents (default: all 1400)")
    parser.add_argument("--models-home", help="a home whose models/ is already prepared")
    args = parser.parse_args()
    # a terminated benchmark stops its nodes (``measure``'s finally) instead of leaking them
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores (one per serving node)")
    work = Path(tempfile.mkdtemp(prefix="calinode-bench-scale-"))
    if args.models_home:
        models = Path(args.models_home) / "models"
    else:
        subprocess.run([CALINODE, "models", "--home", str(work / "models-home"), "prepare"],
                       check=True)
        models = work / "models-home" / "models"
    docs = [doc for doc in corpus() if doc.get("text", "").strip()]  # 2 have no text
    docs = docs[:args.ingest_docs] if args.ingest_docs > 0 else docs
    # the client runs on core 0 too, with the coordinator
    os.sched_setaffinity(0, {0})
    one = measure(work, models, 1, args, docs)
    two = measure(work, models, 2, args, docs)
    report(args, one, two)


def report(args: argparse.Namespace, one: Figures, two: Figures) -> None:
    print(f"scale-out, serving nodes pinned one per core, --threads 1; medians of "
          f"{args.rounds} rounds\n")
    print(f"{'workload':44} {'1 node':>10} {'2 nodes':>10} {'ratio':>7} {'target':>7}")
    rows = [(f"embed {args.texts} texts, texts/s", one.embed, two.embed, 1.8),
            (f"ingest Cranfield ({args.ingest_docs or 'all'} docs), chunks/s", one.ingest,
             two.ingest, 1.8),
            (f"generate {GEN_CONCURRENCY} x {args.gen_tokens} tokens at once, tokens/s",
             one.generate, two.generate, 1.7)]
    for label, a, b, target in rows:
        print(f"{label:44} {a:10.1f} {b:10.1f} {b / a:6.2f}x {target:6.1f}x")
    print(f"\ncoordinator CPU per embedded text: {one.coordinator_us_per_text:.0f} us (1 node), "
          f"{two.coordinator_us_per_text:.0f} us (2 nodes); per generated token: "
          f"{one.coordinator_us_per_token:.0f} / {two.coordinator_us_per_token:.0f} us")
    print(f"the last round's {GEN_CONCURRENCY} generations ({two.generated} tokens) per serving "
          f"node: 1 node "
          f"{one.served}, 2 nodes {two.served}")
    per_node = one.embed
    cost = two.coordinator_us_per_text / 1e6
    print("\nmodel of N machines, embed (texts/s): each serving node as the 1-node figure, "
          f"the coordinator at {two.coordinator_us_per_text:.0f} us CPU per text, "
          f"1 Gbit/s at {BYTES_PER_TEXT:.0f} B per text")
    predicted_two, _ = predict(2, per_node, cost)
    print(f"  check: 2 nodes predicted {predicted_two:.0f}, measured {two.embed:.0f} "
          f"({two.embed / predicted_two:.2f} of the model)")
    for n in (1, 2, 4, 8, 16, 32, 64):
        rate, limit = predict(n, per_node, cost)
        print(f"  N={n:3d}: {rate:9.0f} texts/s, limited by {limit}")
    token_cost = two.coordinator_us_per_token / 1e6
    per_node_tokens = one.generate
    predicted_tokens, _ = predict(2, per_node_tokens, token_cost, bytes_per_item=BYTES_PER_TOKEN)
    print(f"\nmodel of N machines, concurrent generations (tokens/s): each serving node "
          f"{per_node_tokens:.0f} tokens/s, the coordinator at "
          f"{two.coordinator_us_per_token:.0f} us CPU per token")
    print(f"  check: 2 nodes predicted {predicted_tokens:.0f}, measured {two.generate:.0f} "
          f"({two.generate / predicted_tokens:.2f} of the model)")
    for n in (1, 2, 4, 8, 16, 32, 64):
        rate, limit = predict(n, per_node_tokens, token_cost, bytes_per_item=BYTES_PER_TOKEN)
        print(f"  N={n:3d}: {rate:9.0f} tokens/s, limited by {limit}")


if __name__ == "__main__":
    main()
