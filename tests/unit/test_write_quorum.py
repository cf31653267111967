from __future__ import annotations

from calinode.node.rag.write_quorum import ReplicaAnswer, settle


def test_stale_is_never_an_acknowledgement() -> None:
    answers = [ReplicaAnswer("a", {"d1": "stale", "d2": "inserted"}),
               ReplicaAnswer("b", {"d1": "stale", "d2": "unchanged"})]
    d1, d2 = settle(["d1", "d2"], answers, quorum=2)
    assert not d1.acknowledged and d1.outcome == "CONFLICT" and "newer version" in d1.message
    assert d2.acknowledged and d2.outcome == "inserted"


def test_quorum_counts_replicas_that_took_the_document() -> None:
    answers = [ReplicaAnswer("a", {"d": "replaced"}), ReplicaAnswer("b", None, "OVERLOADED"),
               ReplicaAnswer("c", {"d": "stale"})]
    (two,) = settle(["d"], answers, quorum=2)
    assert not two.acknowledged and two.outcome == "CONFLICT"
    (one,) = settle(["d"], answers, quorum=1)
    assert one.acknowledged and one.outcome == "replaced"
    (none,) = settle(["d"], [ReplicaAnswer("b", None, "OVERLOADED")], quorum=1)
    assert not none.acknowledged and none.outcome == "SHARD_UNAVAILABLE"
    assert "OVERLOADED" in none.message


def test_a_replica_that_does_not_name_the_document_did_not_take_it() -> None:
    (doc,) = settle(["d"], [ReplicaAnswer("a", {}), ReplicaAnswer("b", {"d": "deleted"})], 2)
    assert not doc.acknowledged


def test_deletes_say_what_they_deleted() -> None:
    answers = [ReplicaAnswer("a", {"gone": "deleted", "never": "unchanged"}),
               ReplicaAnswer("b", {"gone": "deleted", "never": "unchanged"})]
    gone, never = settle(["gone", "never"], answers, quorum=2)
    assert (gone.outcome, never.outcome) == ("deleted", "unchanged")
