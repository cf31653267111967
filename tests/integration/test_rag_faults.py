"""The index under faults and change: kill -9 during ingest, a node joining, updates, deletes,
and retrieval-augmented answers, with real daemons."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from calinode.models.store.shard_store import ShardStore
from calinode.node.client import CalinodeClient
from daemon_harness import Daemon, Swarm, run_cli, shards_converged, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cranfield

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if not (cranfield.DATA / "cran.all.1400").exists():
    pytest.skip(f"Cranfield data not found at {cranfield.DATA}", allow_module_level=True)

DOCS = [d for d in cranfield.corpus() if d["text"].strip()]


def start_index_swarm(swarm: Swarm, models: Path, count: int = 3, *extra: str) -> list[Daemon]:
    first = swarm.daemon("n1", models=models).start("--index", "--threads", "1", *extra)
    nodes = [first] + [swarm.daemon(f"n{i}", models=models).start(
        "--index", "--threads", "1", "--bootstrap", first.addr, *extra)
        for i in range(2, count + 1)]
    ids = {n.peer_id for n in nodes}
    wait_for(lambda: all(set(n.peers()) == ids for n in nodes), 30, "the swarm")
    run_cli("collections", "create", "cran", "--shards", "16", "--replicas", "2",
            "--home", str(first.home))
    wait_for(lambda: all(any(c["name"] == "cran" for c in n.collections())
                         for n in nodes), 30, "the definition everywhere")
    return nodes


def converged(daemon: Daemon, replicas: int = 2) -> bool:
    return shards_converged(daemon, "cran", replicas)


def search(daemon: Daemon, text: str, k: int = 10) -> dict[str, Any]:
    with CalinodeClient.from_home(daemon.home) as client:
        return client.search("cran", text, k=k)[0]


def replica_docs(nodes: list[Daemon]) -> dict[tuple[str, int], set[str]]:
    """Open every replica on disk (daemons stopped) and check it; doc ids per replica."""
    found = {}
    for node in nodes:
        root = node.home / "shards" / "cran"
        for folder in sorted(p for p in root.iterdir() if p.name.isdigit()):
            with ShardStore.open(folder, dim=384) as store:
                assert store.check() == [], (node.name, folder.name)
                docs, _chunks = store.count()
                ids = store.doc_ids()
                assert len(ids) == docs == len(set(ids))
                found[(node.name, int(folder.name))] = set(ids)
    return found


def test_kill_during_ingest_loses_no_acknowledged_document(
    swarm: Swarm, prepared_models: Path
) -> None:
    nodes = start_index_swarm(swarm, prepared_models)
    n1, _, n3 = nodes
    acknowledged: set[str] = set()
    for round_, delay in enumerate((0.3, 1.5, 4.0)):
        part = DOCS[round_ * 300:(round_ + 1) * 300]
        outcome: dict[str, Any] = {}

        def ingest(part: list[dict[str, Any]] = part, outcome: dict[str, Any] = outcome) -> None:
            with CalinodeClient.from_home(n1.home) as client:
                outcome["summary"] = client.ingest("cran", part, timeout=300)

        worker = threading.Thread(target=ingest)
        worker.start()
        time.sleep(delay)
        n3.kill()  # kill -9 of a replica in the middle of the ingest
        worker.join(300)
        assert not worker.is_alive()
        failed = {f["_id"] for f in outcome["summary"]["failed"]}
        acknowledged |= {d["_id"] for d in part} - failed
        print(f"\nkill after {delay} s: {len(part) - len(failed)}/{len(part)} acknowledged")
        n3.start("--index", "--threads", "1", "--bootstrap", n1.addr)
        wait_for(lambda: n1.peers()[n3.peer_id]["alive"], 120, "n1 to see n3 again")
        wait_for(lambda: converged(n1), 120, "replicas converged after the restart")
    assert len(acknowledged) > 0
    for node in nodes:
        node.stop()
    replicas = replica_docs(nodes)
    on_disk = set().union(*replicas.values())
    assert acknowledged <= on_disk  # every acknowledged document survived, on disk and indexed
    by_shard: dict[int, list[set[str]]] = {}
    for (_, shard), ids in replicas.items():
        by_shard.setdefault(shard, []).append(ids)
    for shard, copies in by_shard.items():
        ready = [c for c in copies if c]
        assert len(ready) >= 2 and all(c == ready[0] for c in ready), f"shard {shard}"


def test_a_joining_node_takes_its_share_while_searches_stay_complete(
    swarm: Swarm, prepared_models: Path
) -> None:
    gc = ("--replica-gc-after", "1")  # the old owners delete what they gave up, soon
    nodes = start_index_swarm(swarm, prepared_models, 3, *gc)
    n1 = nodes[0]
    with CalinodeClient.from_home(n1.home) as client:
        summary = client.ingest("cran", DOCS[:300])
    assert summary["acknowledged"] == 300
    wait_for(lambda: converged(n1), 60, "initial replicas")
    probes = ["heat transfer in hypersonic flow", "buckling of thin cylindrical shells",
              "boundary layer transition on a flat plate"]
    before = [[(h["doc_id"], h["chunk"]) for h in search(n1, p)["hits"]] for p in probes]
    n4 = swarm.daemon("n4", models=prepared_models).start(
        "--index", "--threads", "1", "--bootstrap", n1.addr, *gc)
    wait_for(lambda: any(c["name"] == "cran" for c in n4.collections()), 30,
             "the newcomer to learn the collection")

    def n4_has_its_share() -> bool:
        rows = n1.shards("cran")
        mine = [r for r in rows if n4.peer_id in r["owners"]]
        return bool(mine) and all(
            any(x["peer"] == n4.peer_id for x in r["replicas"]) for r in mine)

    deadline = time.monotonic() + 120
    while not (n4_has_its_share() and converged(n1)):
        assert time.monotonic() < deadline, "n4 never took over its shards"
        for probe, expected in zip(probes, before, strict=True):
            result = search(n4, probe)  # asked on the newcomer, during the move
            assert not result["partial"]
            assert [(h["doc_id"], h["chunk"]) for h in result["hits"]] == expected
        time.sleep(0.5)
    owned = sum(1 for r in n1.shards("cran")
                if n4.peer_id in r["owners"])
    print(f"\nn4 took over {owned} of 32 shard replicas")
    assert owned > 0

    # the replicas the old owners gave up go, and only those: each shard ends on its owners.
    # The shard map lists served copies; a copy still on its way in or out (a newcomer may
    # start pulling a shard it owned only while it learned the swarm) shows in status.
    def only_owners_hold() -> bool:
        return all({x["peer"] for x in r["replicas"]} == set(r["owners"])
                   for r in n1.shards("cran")) and not any(
            node.status()["replicas_not_ready"] for node in [*nodes, n4])

    deadline = time.monotonic() + 180
    while not only_owners_hold():
        assert time.monotonic() < deadline, "the given-up replicas were never deleted"
        for probe, expected in zip(probes, before, strict=True):
            result = search(n1, probe)  # searched while replicas are being deleted
            assert not result["partial"]
            assert [(h["doc_id"], h["chunk"]) for h in result["hits"]] == expected
        time.sleep(0.5)
    rows = {r["shard"]: set(r["owners"]) for r in n1.shards("cran")}
    everyone = [*nodes, n4]
    names = {node.peer_id: node.name for node in everyone}
    for node in everyone:
        node.stop()
    found = replica_docs(everyone)  # on disk: exactly the owned replicas, all documents
    assert set(found) == {(names[p], shard) for shard, owners in rows.items() for p in owners}
    assert set().union(*found.values()) == {d["_id"] for d in DOCS[:300]}


def test_updates_deletes_and_answers(swarm: Swarm, prepared_models: Path) -> None:
    nodes = start_index_swarm(swarm, prepared_models, count=2)
    n1, n2 = nodes
    docs = DOCS[:40]
    with CalinodeClient.from_home(n1.home) as client:
        assert client.ingest("cran", docs)["acknowledged"] == 40
        again = client.ingest("cran", docs)  # idempotent
        assert again["acknowledged"] == 40, again["failed"]
        target = docs[0]
        hits = client.search("cran", target["text"], k=3)[0]["hits"]
        assert hits[0]["doc_id"] == target["_id"]
        changed = dict(target, text="Wind turbines on offshore platforms and icing of blades.")
        client.ingest("cran", [changed])
        hits = client.search("cran", "icing of offshore wind turbine blades", k=3)[0]["hits"]
        assert hits[0]["doc_id"] == target["_id"] and "turbines" in hits[0]["text"]
        assert sum(1 for h in client.search("cran", target["text"], k=40)[0]["hits"]
                   if h["doc_id"] == target["_id"] and "propeller" in h["text"]) == 0
        assert client.delete("cran", [target["_id"]])["deleted"] == [target["_id"]]
        hits = client.search("cran", "icing of offshore wind turbine blades", k=40)[0]["hits"]
        assert target["_id"] not in {h["doc_id"] for h in hits}
        answer = client.ask("cran", "What was studied about wings in a propeller slipstream?",
                            k=3, max_tokens=40)
        assert answer["answer"] and len(answer["sources"]) == 3
        assert not answer["partial"]
    import openai

    oc = openai.OpenAI(base_url=f"http://{n2.info['api']}/v1", api_key=n2.token)
    chat = oc.chat.completions.create(
        model="smollm2-135m", max_tokens=30,
        messages=[{"role": "user", "content": "What limits the lift of a thin airfoil?"}],
        extra_body={"collection": "cran", "k": 3})
    assert chat.choices[0].message.content
    assert len(chat.model_extra["sources"]) == 3
    streamed = run_cli("ask", "What is known about slipstreams?", "--collection", "cran",
                       "-k", "2", "--max-tokens", "24", "--home", str(n2.home)).stdout
    assert "sources:" in streamed and "[1]" in streamed and "[2]" in streamed
    status = json.loads(run_cli("shards", "--collection", "cran", "--json",
                                "--home", str(n2.home)).stdout)
    assert len(status) == 16
