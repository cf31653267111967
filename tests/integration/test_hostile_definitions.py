"""A poisoned collection definition, sent by a real hostile peer to real daemons, then a restart.

Before issue 8, a definition with ``shards = 2.5`` was accepted from a peer's record, saved to
``collections/*.json`` and re-advertised, and the node that saved it crashed at every start,
even alone. Now the definition is refused on every path a peer has (its capability record, a
``shard.write`` request), and a poisoned file already on disk (left by an older version) is set
aside at start-up instead of stopping the node.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from calinode.protocol.collections import CollectionDef
from daemon_harness import Swarm, wait_for
from hostile_peer import open_hostile_peer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD = CollectionDef(name="papers", model="minilm-l6-int8", model_sha256="ab" * 32, dim=4,
                     pooling="mean", normalize=True, shards=2, replicas=1).to_wire()
POISONS: list[dict[str, Any]] = [
    {**GOOD, "name": "poison-float", "shards": 2.5},
    {**GOOD, "name": "poison-bool", "replicas": True},
    {**GOOD, "name": "poison-huge", "shards": 10**9},
]


def attack(target_addr: str, target_id: str) -> list[dict[str, Any]]:
    """The hostile peer's attempts; returns the job replies it got."""
    replies: list[dict[str, Any]] = []

    async def main() -> None:
        async with open_hostile_peer() as evil:
            await evil.connect(target_addr)
            # 1. advertised in its own signed record, directly to the node
            record = evil.record(capabilities={"jobs": [], "collections": POISONS})
            await evil.exchange(target_id, evil.exchange_wire(record))
            # 2. carried by shard.write requests (the definition travels with writes)
            for poison in POISONS:
                replies.append(await evil.job(target_id, "shard.write", {
                    "collection": poison["name"], "definition": poison, "shard": 0,
                    "docs": [], "seed": True}))

    trio.run(main)
    return replies


def test_poisoned_definitions_are_refused_and_a_poisoned_file_does_not_stop_a_restart(
    swarm: Swarm,
) -> None:
    a = swarm.daemon("a").start("--index")
    b = swarm.daemon("b").start("--index", "--bootstrap", a.addr)
    wait_for(lambda: b.peer_id in {p for p, r in a.peers().items() if r["alive"]}, 60,
             "b to join a")

    replies = attack(a.addr, a.peer_id)
    assert [r.get("code") for r in replies] == ["BAD_REQUEST"] * len(POISONS), replies
    assert all(r["t"] == "err" for r in replies)

    for daemon in (a, b):  # both alive and serving, nothing stored, nothing advertised
        assert daemon.cli("ping", (b if daemon is a else a).peer_id, "-c", "1")["rtt_ms"]
        assert not list((daemon.home / "collections").glob("poison*"))
        assert daemon.collections() == [] or all(
            not c["name"].startswith("poison") for c in daemon.collections())
    status = a.status()
    assert status["jobs"]["bad_frames"] + status["jobs"]["failed"] >= len(POISONS), status

    # a poisoned file left on disk by an older version: the next start sets it aside
    assert a.stop() == 0
    folder = a.home / "collections"
    folder.mkdir(exist_ok=True)
    (folder / "poison-float.json").write_text(json.dumps(POISONS[0]))
    (folder / "not-json.json").write_text("{this is not json")
    (folder / "papers.json").write_text(json.dumps(GOOD))
    a.start("--index", "--bootstrap", b.addr)
    assert a.cli("ping", b.peer_id, "-c", "1")["rtt_ms"]
    names = [c["name"] for c in a.collections()]
    assert names == ["papers"], names
    assert sorted(p.name for p in folder.iterdir()) == [
        "not-json.json.rejected", "not-json.json.rejected.why", "papers.json",
        "poison-float.json.rejected", "poison-float.json.rejected.why"]
    assert "shards" in (folder / "poison-float.json.rejected.why").read_text()
    assert "set aside" in a.log()
    # and the node keeps its place in the swarm: b sees it alive again
    wait_for(lambda: b.peers()[a.peer_id]["alive"], 60, "b to see a again")
