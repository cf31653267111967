"""Freshness and liveness rules of the peer table (pure logic, fake clock values)."""

import dataclasses

import pytest

from calinode.node.p2p.peer_table import MAX_RELAY_AGE_MS, BadCapabilities, PeerTable, TableFull
from calinode.protocol.errors import RecordError
from calinode.protocol.messages import CapabilityRecord, Load
from calinode.protocol.records import record_size

NOW_MS = 1_800_000_000_000


def record(peer: str, seq: int, issued_at_ms: int = NOW_MS) -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=peer, public_key=b"k", addrs=(f"/ip4/127.0.0.1/tcp/1/p2p/{peer}",),
        version="0", protocol_version="1.0.0", capabilities={},
        load=Load(in_flight=0, queue_depth=0),
        seq=seq, issued_at_ms=issued_at_ms, signature=b"s",
    )


def table() -> PeerTable:
    return PeerTable("SELF", dead_after=6.0, drop_after=30.0)


def test_direct_record_makes_peer_alive() -> None:
    t = table()
    assert t.accept(record("A", 1), now=0.0, now_ms=NOW_MS, direct=True)
    entry = t.get("A")
    assert entry is not None and entry.alive and entry.last_seen == 0.0


def test_relayed_record_is_known_but_not_alive() -> None:
    t = table()
    t.accept(record("A", 1), now=0.0, now_ms=NOW_MS, direct=False)
    entry = t.get("A")
    assert entry is not None and not entry.alive


def test_stale_and_duplicate_records_are_ignored() -> None:
    t = table()
    t.accept(record("A", 5), now=0.0, now_ms=NOW_MS, direct=True)
    assert not t.accept(record("A", 5), now=1.0, now_ms=NOW_MS, direct=False)
    assert not t.accept(record("A", 4), now=1.0, now_ms=NOW_MS, direct=False)
    assert t.get("A").record.seq == 5  # type: ignore[union-attr]
    assert t.accept(record("A", 6), now=1.0, now_ms=NOW_MS, direct=False)
    assert t.get("A").record.seq == 6  # type: ignore[union-attr]


def test_old_relayed_record_is_rejected() -> None:
    t = table()
    with pytest.raises(RecordError, match="stale"):
        t.accept(record("A", 1, NOW_MS - MAX_RELAY_AGE_MS - 1), now=0.0, now_ms=NOW_MS,
                 direct=False)
    assert "A" not in t


def test_own_record_is_never_stored() -> None:
    t = table()
    assert not t.accept(record("SELF", 1), now=0.0, now_ms=NOW_MS, direct=True)
    assert len(t) == 0


def test_silent_peer_dies_then_is_dropped() -> None:
    t = table()
    t.accept(record("A", 1), now=0.0, now_ms=NOW_MS, direct=True)
    t.accept(record("B", 1), now=0.0, now_ms=NOW_MS, direct=True)
    t.mark_seen("B", 5.0)
    assert t.sweep(6.0).died == []
    swept = t.sweep(6.5)
    assert swept.died == ["A"] and [e.peer_id for e in t.alive()] == ["B"]
    assert t.sweep(29.0).dropped == []
    swept = t.sweep(31.0)
    assert "A" in swept.dropped and "A" not in t


def test_dead_peer_comes_back_when_heard_from() -> None:
    t = table()
    t.accept(record("A", 1), now=0.0, now_ms=NOW_MS, direct=True)
    t.sweep(10.0)
    assert not t.get("A").alive  # type: ignore[union-attr]
    t.accept(record("A", 2), now=11.0, now_ms=NOW_MS, direct=True)  # restarted, newer seq
    assert t.get("A").alive  # type: ignore[union-attr]


def test_rtt_is_smoothed() -> None:
    t = table()
    t.accept(record("A", 1), now=0.0, now_ms=NOW_MS, direct=True)
    t.mark_seen("A", 1.0, rtt_ms=10.0)
    t.mark_seen("A", 2.0, rtt_ms=20.0)
    assert t.get("A").rtt_ms == pytest.approx(13.0)  # type: ignore[union-attr]


def test_poisoned_capabilities_are_refused_and_not_stored() -> None:
    t = table()
    poisoned = dataclasses.replace(record("A", 1), capabilities={"collections": 1})
    with pytest.raises(BadCapabilities, match="collections"):
        t.accept(poisoned, now=0.0, now_ms=NOW_MS, direct=True)
    assert "A" not in t


def test_table_is_capped_and_makes_room_only_from_dead_peers() -> None:
    t = PeerTable("SELF", dead_after=6.0, drop_after=300.0, max_peers=3)
    for i, peer in enumerate("ABC"):
        t.accept(record(peer, 1), now=float(i), now_ms=NOW_MS, direct=True)
    with pytest.raises(TableFull):
        t.accept(record("D", 1), now=3.0, now_ms=NOW_MS, direct=True)
    t.mark_seen("B", 7.0)
    t.mark_seen("C", 7.0)
    t.sweep(7.0)  # A died
    assert t.accept(record("D", 1), now=8.0, now_ms=NOW_MS, direct=True)
    assert {e.peer_id for e in t.entries()} == {"B", "C", "D"}
    assert t.get("D").size == record_size(record("D", 1))  # type: ignore[union-attr]
