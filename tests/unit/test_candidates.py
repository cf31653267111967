"""The candidates table of relayed records: caps per sender and in total (checked before any
signature), refreshes, dial budget."""

from __future__ import annotations

from calinode.node.p2p.candidates import RETRY_AFTER, DialBudget, RelayedCandidates, Want
from calinode.protocol.capabilities import Capabilities
from calinode.protocol.records import CapabilityRecord, Load

CAPS = Capabilities()


def record(peer: str, seq: int = 1, issued_at_ms: int = 1000) -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=peer, public_key=b"k", addrs=(), version="0", protocol_version="1",
        capabilities={}, load=Load(in_flight=0, queue_depth=0), seq=seq,
        issued_at_ms=issued_at_ms, signature=b"s")


def test_per_sender_cap_keeps_the_first_and_refuses_the_rest_before_any_signature() -> None:
    table = RelayedCandidates(per_sender=3, total=100)
    pushed = []
    for i in range(5):
        if i == 3:
            assert not table.admits("evil") and table.admits("other")
            assert table.wants(record("P4"), "evil", now=3.0) is Want.FULL
        pushed += table.offer(record(f"P{i + 1}"), CAPS, sender="evil", now=float(i))
    assert len(table) == 3 and [c.peer_id for c in pushed] == ["P4", "P5"]
    assert set(table.senders()) == {"evil"} and "P1" in table and "P4" not in table
    # a candidate whose dial failed gives its slot up to the sender's next record
    table.dial_failed("P2", 10.0)
    assert table.admits("evil")
    assert [c.peer_id for c in table.offer(record("P6"), CAPS, sender="evil", now=11.0)] \
        == ["P2"]
    assert sorted(c for c in ("P1", "P2", "P3", "P6") if c in table) == ["P1", "P3", "P6"]


def test_total_cap_evens_out_the_senders_and_spares_the_small_ones() -> None:
    table = RelayedCandidates(per_sender=32, total=40)
    table.offer(record("honest"), CAPS, sender="good", now=0.0)
    pushed = []
    for sender in range(10):
        for i in range(100):
            peer = f"S{sender}x{i}".replace("0", "z")
            pushed += table.offer(record(peer), CAPS, sender=f"evil{sender}",
                                  now=float(sender * 100 + i))
    assert len(table) == 40 and "honest" in table
    evil = [n for s, n in table.senders().items() if s != "good"]
    assert len(evil) == 10 and max(evil) - min(evil) <= 2
    assert len(pushed) == 10 * 100 + 1 - 40
    # once even, a resent flood changes nothing: every new record is refused up front
    assert not any(table.admits(f"evil{sender}") for sender in range(10))
    assert table.admits("newcomer")


def test_newer_record_refreshes_its_slot_at_most_every_refresh_after() -> None:
    table = RelayedCandidates(refresh_after=60.0)
    table.offer(record("P", seq=5), CAPS, sender="a", now=0.0)
    assert table.has_seen(record("P", seq=5)) and table.has_seen(record("P", seq=4))
    assert not table.has_seen(record("P", seq=6))
    assert table.wants(record("P", seq=5), "b", now=100.0) is Want.SEEN
    assert table.wants(record("P", seq=6), "b", now=30.0) is Want.SEEN
    assert table.wants(record("P", seq=6), "b", now=60.0) is Want.REFRESH
    assert table.wants(record("Q", seq=6), "b", now=60.0) is Want.NEW
    assert table.offer(record("P", seq=4), CAPS, sender="b", now=1.0) == []
    table.dial_failed("P", 1.0)
    table.offer(record("P", seq=6), CAPS, sender="b", now=62.0)
    held = table.get("P")
    assert held is not None and held.record.seq == 6 and held.received_at == 62.0
    # the slot stays the first sender's, with its dial history
    assert held.sender == "a" and held.failed_dials == 1 and table.senders() == {"a": 1}


def test_failed_dials_wait_and_go_first_when_full() -> None:
    table = RelayedCandidates(per_sender=2, total=10)
    table.offer(record("A"), CAPS, sender="s", now=0.0)
    table.offer(record("B"), CAPS, sender="s", now=1.0)
    table.dial_failed("B", 2.0)
    assert [c.peer_id for c in table.due(2.0, 10)] == ["A"]
    assert {c.peer_id for c in table.due(2.0 + RETRY_AFTER, 10)} == {"A", "B"}
    pushed = table.offer(record("C"), CAPS, sender="s", now=3.0)
    assert [c.peer_id for c in pushed] == ["B"]


def test_expire_and_discard() -> None:
    table = RelayedCandidates()
    table.offer(record("o1d", issued_at_ms=10), CAPS, sender="s", now=0.0)
    table.offer(record("new", issued_at_ms=500), CAPS, sender="s", now=0.0)
    assert [c.peer_id for c in table.expire(before_ms=100)] == ["o1d"]
    assert table.discard("new") is not None and len(table) == 0 and table.senders() == {}


def test_dial_budget_is_a_token_bucket() -> None:
    budget = DialBudget(rate=4.0, burst=8, now=0.0)
    assert budget.take(0.0, 100) == 8
    assert budget.take(0.1, 100) == 0
    assert budget.take(1.0, 100) == 4
    assert budget.take(100.0, 3) == 3 and budget.available(100.0) == 5
