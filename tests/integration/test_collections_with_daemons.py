"""A collection's life with real daemons and the real model (issue 10): one node is a valid
swarm, the replication is raised later, and acknowledged writes are visible to every search
after an owner restarts."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from calinode.node.client import CalinodeClient
from calinode.node.index.placement import shard_of
from calinode.protocol.errors import EXIT_DOCS_FAILED
from daemon_harness import Daemon, Swarm, run_cli, shards_converged, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SAFETY = 120.0  # seconds: safety nets, never the thing under test
WORDS = ("aircraft", "wing", "boundary", "layer", "shock", "heat", "flow", "pressure",
         "nozzle", "turbine", "blade", "cylinder", "vortex", "plate", "buckling", "shell",
         "panel", "flutter", "jet", "mach", "cone", "drag", "lift", "laminar", "turbulent",
         "viscous", "transonic", "hypersonic", "supersonic", "cavity", "orbit")


def documents(prefix: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Small distinct documents: each is the best hit of a query with its own text."""
    rng = random.Random(seed)
    return [{"_id": f"{prefix}{i}",
             "text": f"{prefix} {i}: " + " ".join(rng.choice(WORDS) for _ in range(12))
             + f" (record {prefix}-{i * 7919 % 1000})"} for i in range(count)]


def write_jsonl(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def index_daemon(swarm: Swarm, name: str, models: Path, *extra: str) -> Daemon:
    return swarm.daemon(name, models=models).start("--index", "--threads", "1", *extra)


def ingest(daemon: Daemon, name: str, path: Path) -> tuple[int, dict[str, Any], str]:
    proc = run_cli("ingest", str(path), "--collection", name, "--home", str(daemon.home),
                   "--json", check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def test_one_node_is_a_valid_swarm(swarm: Swarm, prepared_models: Path,
                                   tmp_path: Path) -> None:
    node = index_daemon(swarm, "n1", prepared_models)
    created = node.cli("collections", "create", "notes", "--shards", "4")
    assert created["replicas"] == 1 and created["replicas_default"] is True
    assert created["quorum"] == 1 and "min(2, 1 live index peer)" in created["notes"][0]
    docs = write_jsonl(tmp_path / "docs.jsonl", documents("a", 30, seed=1))
    status, summary, _ = ingest(node, "notes", docs)
    assert status == 0 and summary["acknowledged"] == 30 and summary["failed"] == []

    bad = write_jsonl(tmp_path / "bad.jsonl", [*documents("b", 3, seed=2),
                                               {"_id": "empty", "text": ""}])
    status, summary, stderr = ingest(node, "notes", bad)
    assert status == EXIT_DOCS_FAILED and summary["acknowledged"] == 3
    assert [f["_id"] for f in summary["failed"]] == ["empty"]
    assert "1 of 4 documents failed" in stderr

    two = node.cli("collections", "create", "two", "--shards", "4", "--replicas", "2")
    assert two["replicas"] == 2 and two["replicas_default"] is False
    assert any("only 1 live index peer" in n for n in two["notes"])
    proc = run_cli("ingest", str(docs), "--collection", "two", "--home", str(node.home),
                   check=False)
    assert proc.returncode != 0 and proc.stdout == ""  # refused before any document
    assert "start another node with --index" in proc.stderr
    assert "calinode collections update two --replicas 1" in proc.stderr
    assert all(x["docs"] == 0 for r in node.shards("two")
               for x in r["replicas"]), "nothing was written"

    updated = node.cli("collections", "update", "two", "--replicas", "1")
    assert updated["replicas"] == 1 and updated["version"] == two["version"] + 1
    status, summary, _ = ingest(node, "two", docs)
    assert status == 0 and summary["acknowledged"] == 30


def test_raising_the_replication_brings_the_new_replicas_up(
    swarm: Swarm, prepared_models: Path, tmp_path: Path
) -> None:
    n1 = index_daemon(swarm, "n1", prepared_models)
    nodes = [n1] + [index_daemon(swarm, f"n{i}", prepared_models, "--bootstrap", n1.addr)
                    for i in (2, 3)]
    ids = {n.peer_id for n in nodes}
    wait_for(lambda: all(set(n.peers()) == ids for n in nodes), SAFETY, "the swarm")
    n1.cli("collections", "create", "grow", "--shards", "8", "--replicas", "1")
    wait_for(lambda: all(any(c["name"] == "grow" for c in n.collections())
                         for n in nodes), SAFETY, "the definition everywhere")
    status, summary, _ = ingest(n2 := nodes[1], "grow",
                                write_jsonl(tmp_path / "d.jsonl", documents("g", 80, seed=3)))
    assert status == 0 and summary["acknowledged"] == 80
    wait_for(lambda: shards_converged(n1, "grow", 1), SAFETY, "one replica per shard")

    updated = n1.cli("collections", "update", "grow", "--replicas", "2")
    assert updated["replicas"] == 2 and updated["quorum"] == 2
    wait_for(lambda: all(n.api("collection", "grow")["replicas"] == 2
                         for n in nodes), SAFETY, "the new definition everywhere")
    wait_for(lambda: shards_converged(n2, "grow", 2), SAFETY, "two equal replicas per shard")
    rows = n2.shards("grow")
    assert sum(r["replicas"][0]["docs"] for r in rows) == 80
    for row in rows:
        assert {r["peer"] for r in row["replicas"]} >= set(row["owners"])
        assert len({r["docs"] for r in row["replicas"]}) == 1


def find_each(daemon: Daemon, docs: list[dict[str, Any]], shards: int) -> tuple[int, int]:
    """Search every document by its own text on ``daemon``: (found, named missing). A document
    that is not found must be in a shard the answer names as missing (not current)."""
    with CalinodeClient.from_home(daemon.home) as client:
        rows = client.search("fresh", queries=[{"_id": d["_id"], "text": d["text"]}
                                               for d in docs], k=5, timeout=120)
    found = missing = 0
    for doc, row in zip(docs, rows, strict=True):
        if doc["_id"] in {h["doc_id"] for h in row["hits"]}:
            found += 1
        else:
            assert row["partial"] and shard_of(doc["_id"], shards) in row["missing_shards"], (
                f"{doc['_id']} (shard {shard_of(doc['_id'], shards)}) not found on "
                f"{daemon.name}, and the answer says every shard is current: {row}")
            missing += 1
    return found, missing


def test_acknowledged_writes_are_found_by_every_search_after_an_owner_restarts(
    swarm: Swarm, prepared_models: Path, tmp_path: Path
) -> None:
    shards = 8
    n1 = index_daemon(swarm, "n1", prepared_models)
    n2, n3 = (index_daemon(swarm, f"n{i}", prepared_models, "--bootstrap", n1.addr)
              for i in (2, 3))
    nodes = [n1, n2, n3]
    ids = {n.peer_id for n in nodes}
    wait_for(lambda: all(set(n.peers()) == ids for n in nodes), SAFETY, "the swarm")
    n1.cli("collections", "create", "fresh", "--shards", str(shards), "--replicas", "2")
    wait_for(lambda: all(any(c["name"] == "fresh" for c in n.collections())
                         for n in nodes), SAFETY, "the definition everywhere")
    before = documents("early", 40, seed=4)
    status, _, _ = ingest(n1, "fresh", write_jsonl(tmp_path / "early.jsonl", before))
    assert status == 0
    wait_for(lambda: shards_converged(n1, "fresh", 2), SAFETY, "two replicas per shard")

    n3.kill()  # an owner goes down; the writes that follow are acknowledged by the others
    wait_for(lambda: not n1.peers()[n3.peer_id]["alive"]
             and not n2.peers()[n3.peer_id]["alive"], SAFETY, "n3 dead")
    during = documents("late", 200, seed=5)
    status, summary, _ = ingest(n1, "fresh", write_jsonl(tmp_path / "late.jsonl", during))
    assert status == 0 and summary["acknowledged"] == 200

    by_shard: dict[int, list[dict[str, Any]]] = {}
    for doc in during:
        by_shard.setdefault(shard_of(doc["_id"], shards), []).append(doc)
    probe = [doc for docs in by_shard.values() for doc in docs[:2]]  # a quick first search

    n3.start("--index", "--threads", "1", "--bootstrap", n1.addr)
    first: dict[str, tuple[int, int]] = {}
    probed = {daemon.name: find_each(daemon, probe, shards) for daemon in (n3, n1)}
    started = time.monotonic()
    rounds = 0
    while True:  # search at once, and on until n3 serves its shards again: always complete
        for daemon in (n3, n1):
            result = find_each(daemon, during, shards)
            first.setdefault(daemon.name, result)
        rounds += 1
        serving = {r["shard"] for r in n1.shards("fresh")
                   if n3.peer_id in {x["peer"] for x in r["replicas"]}}
        owned = {r["shard"] for r in n1.shards("fresh")
                 if n3.peer_id in r["owners"]}
        if owned and serving >= owned:
            break
        assert time.monotonic() - started < SAFETY, "n3 never served its shards again"
    print(f"\nfirst searches after the restart (found, named missing): of {len(probe)} "
          f"{probed}, then of 200 {first}; "
          f"{rounds} rounds until n3 served its {len(owned)} shards again")
    assert first["n1"] == (200, 0)
    assert find_each(n3, during, shards) == (200, 0)
    assert find_each(n1, before, shards) == (40, 0)
