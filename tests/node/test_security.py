"""Who may talk to a node: Noise only, the swarm key, the peer-id allowlist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from multiaddr import Multiaddr

from calinode.node.daemon import Node
from calinode.node.identity import write_swarm_key
from calinode.protocol.errors import JobError
from node_harness import open_nodes, wait_until


async def test_plaintext_dialer_cannot_connect(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        node = await start("a")
        key_pair = create_new_key_pair()
        intruder = new_host(key_pair=key_pair,
                            sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
        async with intruder.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with pytest.raises(Exception), trio.fail_after(10):  # noqa: B017 - any dial failure
                await intruder.connect(info_from_p2p_addr(Multiaddr(bootstrap_of(node))))
        assert len(node.table) == 0


async def test_nodes_with_another_swarm_key_cannot_join_or_run_jobs(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    write_swarm_key(key_a)
    write_swarm_key(key_b)
    async with open_nodes(tmp_path) as start:
        a = await start("a", swarm_key=key_a)
        friend = await start("friend", swarm_key=key_a, bootstrap=(bootstrap_of(a),))
        outsider = await start("outsider", swarm_key=key_b, bootstrap=(bootstrap_of(a),))
        await wait_until(lambda: friend.peer_id in {e.peer_id for e in a.table.alive()})
        await trio.sleep(1.0)  # several heartbeat rounds
        assert outsider.peer_id not in a.table and a.peer_id not in outsider.table
        with pytest.raises(JobError):
            await outsider.client.call(a.peer_id, "ping", {}, timeout=2)


async def test_allowlist_closes_everyone_else(
    tmp_path: Path, bootstrap_of: Callable[[Node], str]
) -> None:
    async with open_nodes(tmp_path) as start:
        friend = await start("friend")
        stranger = await start("stranger")
        guarded_node = await start("guarded", allow=(friend.peer_id,))
        for node in (friend, stranger):
            node.membership.bootstrap.append(  # type: ignore[union-attr]
                info_from_p2p_addr(Multiaddr(bootstrap_of(guarded_node))))
        await wait_until(lambda: friend.peer_id in {e.peer_id for e in guarded_node.table.alive()})
        await trio.sleep(1.0)
        assert stranger.peer_id not in guarded_node.table
        assert guarded_node.peer_id not in stranger.table
        with pytest.raises(JobError):
            await stranger.client.call(guarded_node.peer_id, "ping", {}, timeout=2)
        assert (await friend.ping(guarded_node.peer_id, count=1, timeout=5))["rtt_ms"]
