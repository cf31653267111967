"""The pure decisions of a membership round (node/p2p/membership_rules.py)."""

from __future__ import annotations

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from calinode.node.p2p.membership_rules import (
    heartbeat_targets,
    member_record_is_news,
    parse_bootstrap,
    peer_addrs,
    refusal_reason,
    twin_probes_due,
)
from calinode.node.p2p.peer_table import BadCapabilities, PeerTable, StaleRecord, TableFull
from calinode.protocol.errors import ConfigError, RecordError
from calinode.protocol.messages import CapabilityRecord, Load

NOW_MS = 1_800_000_000_000


def new_id() -> str:
    return ID.from_pubkey(create_new_key_pair().public_key).to_base58()


def record(peer: str, seq: int, addrs: tuple[str, ...] = ()) -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=peer, public_key=b"k", addrs=addrs or (f"/ip4/127.0.0.1/tcp/1/p2p/{peer}",),
        version="0", protocol_version="1.0.0", capabilities={},
        load=Load(in_flight=0, queue_depth=0), seq=seq, issued_at_ms=NOW_MS, signature=b"s")


def info(peer: str, port: int) -> PeerInfo:
    return PeerInfo(ID.from_base58(peer), [Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")])


def test_each_refusal_counts_under_its_reason() -> None:
    assert refusal_reason(StaleRecord("old")) == "stale_record"
    assert refusal_reason(BadCapabilities("caps")) == "bad_capabilities"
    assert refusal_reason(TableFull("full")) == "overloaded"
    assert refusal_reason(RecordError("other")) == "bad_record"


def test_a_bootstrap_address_needs_its_peer_id() -> None:
    peer = new_id()
    parsed = parse_bootstrap(f"/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
    assert parsed.peer_id.to_base58() == peer
    assert [str(a) for a in parsed.addrs] == ["/ip4/127.0.0.1/tcp/4001"]
    with pytest.raises(ConfigError, match="expected /ip4/HOST/tcp/PORT/p2p/PEER_ID"):
        parse_bootstrap("/ip4/127.0.0.1/tcp/4001")


def test_peer_addrs_reads_both_forms_and_skips_garbage() -> None:
    peer = new_id()
    rec = record(peer, 1, (f"/ip4/10.0.0.1/tcp/1/p2p/{peer}", "/ip4/10.0.0.2/tcp/2", "garbage"))
    assert [str(a) for a in peer_addrs(rec)] == ["/ip4/10.0.0.1/tcp/1", "/ip4/10.0.0.2/tcp/2"]


def test_a_relayed_member_record_is_news_only_when_newer_and_the_member_is_quiet() -> None:
    table = PeerTable("SELF", dead_after=6.0, drop_after=30.0)
    peer = new_id()
    table.accept(record(peer, 5), now=0.0, now_ms=NOW_MS, direct=True)  # seen at 0.0
    entry = table.get(peer)
    assert entry is not None
    assert not member_record_is_news(entry, record(peer, 5), now=10.0, heartbeat_interval=2.0)
    assert not member_record_is_news(entry, record(peer, 4), now=10.0, heartbeat_interval=2.0)
    # newer, but the member answered us directly within this heartbeat
    assert not member_record_is_news(entry, record(peer, 6), now=1.0, heartbeat_interval=2.0)
    assert member_record_is_news(entry, record(peer, 6), now=2.0, heartbeat_interval=2.0)


def test_heartbeat_targets_are_members_and_addresses_of_peers_not_alive() -> None:
    table = PeerTable("SELF", dead_after=6.0, drop_after=30.0)
    alive, heard_of, stranger = new_id(), new_id(), new_id()
    table.accept(record(alive, 1), now=0.0, now_ms=NOW_MS, direct=True)
    table.accept(record(heard_of, 1), now=0.0, now_ms=NOW_MS, direct=False)
    addresses = [info(alive, 1), info(heard_of, 2), info(stranger, 3)]
    targets = heartbeat_targets(table, addresses)
    assert targets == {alive: None, heard_of: addresses[1], stranger: addresses[2]}


def test_heartbeat_targets_leave_out_addresses_of_our_own_id() -> None:
    me = new_id()
    table = PeerTable(me, dead_after=6.0, drop_after=30.0)
    assert heartbeat_targets(table, [info(me, 1)]) == {}


def test_twin_probes_skip_our_own_addresses_and_wait_their_interval() -> None:
    me, other = new_id(), new_id()
    ours = ["/ip4/127.0.0.1/tcp/1/p2p/" + me]
    probed: dict[str, float] = {}
    addresses = [info(me, 1), info(me, 2), info(other, 3)]
    due = twin_probes_due(addresses, me, ours, probed, now=100.0, interval=10.0)
    assert [[str(a) for a in d.addrs] for d in due] == [["/ip4/127.0.0.1/tcp/2"]]
    assert twin_probes_due(addresses, me, ours, probed, now=105.0, interval=10.0) == []
    again = twin_probes_due(addresses, me, ours, probed, now=110.0, interval=10.0)
    assert [[str(a) for a in d.addrs] for d in again] == [["/ip4/127.0.0.1/tcp/2"]]
