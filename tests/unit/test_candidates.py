"""The candidates table of relayed records: caps per sender and in total, dial budget."""

from __future__ import annotations

from calinode.node.candidates import RETRY_AFTER, DialBudget, RelayedCandidates
from calinode.protocol.capabilities import Capabilities
from calinode.protocol.records import CapabilityRecord, Load

CAPS = Capabilities()


def record(peer: str, seq: int = 1, issued_at_ms: int = 1000) -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=peer, public_key=b"k", addrs=(), version="0", protocol_version="1",
        capabilities={}, load=Load(in_flight=0, queue_depth=0), seq=seq,
        issued_at_ms=issued_at_ms, signature=b"s")


def test_per_sender_cap_pushes_out_that_senders_oldest() -> None:
    table = RelayedCandidates(per_sender=3, total=100)
    pushed = []
    for i in range(5):
        pushed += table.offer(record(f"P{i + 1}"), CAPS, sender="evil", now=float(i))
    assert len(table) == 3 and [c.peer_id for c in pushed] == ["P1", "P2"]
    assert table.senders() == {"evil": 3}


def test_total_cap_takes_from_the_biggest_sender_and_spares_the_others() -> None:
    table = RelayedCandidates(per_sender=32, total=40)
    table.offer(record("honest"), CAPS, sender="good", now=0.0)
    pushed = []
    for sender in range(10):
        for i in range(100):
            peer = f"S{sender}x{i}".replace("0", "z")
            pushed += table.offer(record(peer), CAPS, sender=f"evil{sender}",
                                  now=float(sender * 100 + i))
    assert len(table) == 40 and "honest" in table
    assert max(table.senders().values()) <= 32
    assert len(pushed) == 10 * 100 + 1 - 40


def test_newer_record_replaces_and_old_one_is_ignored() -> None:
    table = RelayedCandidates()
    table.offer(record("P", seq=5), CAPS, sender="a", now=0.0)
    assert table.has_seen(record("P", seq=5)) and table.has_seen(record("P", seq=4))
    assert not table.has_seen(record("P", seq=6))
    assert table.offer(record("P", seq=4), CAPS, sender="b", now=1.0) == []
    table.dial_failed("P", 1.0)
    table.offer(record("P", seq=6), CAPS, sender="b", now=2.0)
    held = table.get("P")
    assert held is not None and held.record.seq == 6 and held.sender == "b"
    assert held.failed_dials == 1 and table.senders() == {"b": 1}


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
