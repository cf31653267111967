"""Membership between real in-process nodes: peer exchange, death, rejoin, forged records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from calinode.node.daemon import Node
from calinode.node.p2p.records import sign_record, verify_record
from calinode.protocol.errors import RecordError
from calinode.protocol.messages import PeerExchange
from node_harness import open_nodes, wait_until


def alive_ids(node: Node) -> set[str]:
    return {entry.peer_id for entry in node.table.alive()}


async def test_one_bootstrap_address_reveals_the_swarm(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b", bootstrap=(bootstrap_of(a),))
        c = await start("c", bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: all(len(alive_ids(n)) == 2 for n in (a, b, c)))
        assert alive_ids(b) == {a.peer_id, c.peer_id}
        record = b.table.get(c.peer_id).record  # type: ignore[union-attr]
        verify_record(record)
        assert {"echo", "ping", "embed", "generate"} <= set(record.capabilities["jobs"])


async def test_silent_peer_is_marked_dead_and_rejoins(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        async with open_nodes(tmp_path) as start_b:
            b = await start_b("b", bootstrap=(bootstrap_of(a),))
            await wait_until(lambda: alive_ids(a) == {b.peer_id})
            b_id = b.peer_id
        # b's nursery is gone: its host is closed
        await wait_until(lambda: not a.table.get(b_id).alive, timeout=10)  # type: ignore[union-attr]
        async with open_nodes(tmp_path) as start_b:
            b2 = await start_b("b", bootstrap=(bootstrap_of(a),))
            assert b2.peer_id == b_id  # same home, same identity
            await wait_until(lambda: alive_ids(a) == {b_id})


async def test_forged_records_are_rejected(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        a = await start("a")
        b = await start("b")
        c = await start("c")
        assert a.membership is not None
        good = c.own_record()
        # b claims c's record as its own
        with pytest.raises(RecordError):
            a.membership.absorb(PeerExchange(record=good, known=()), b.peer_id)
        # a record signed with another node's key
        forged = sign_record(good, b.signer.key_pair)
        with pytest.raises(RecordError, match="forged"):
            verify_record(forged)
        unsigned = good.with_signature(b"")
        with pytest.raises(RecordError, match="unsigned"):
            verify_record(unsigned)
        # a relayed forgery is dropped, the sender's own record still counts
        a.membership.absorb(PeerExchange(record=b.own_record(), known=(forged,)), b.peer_id)
        assert c.peer_id not in a.table and b.peer_id in a.table
        assert a.membership.rejected_records >= 2
        await trio.lowlevel.checkpoint()
