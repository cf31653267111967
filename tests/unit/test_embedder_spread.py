"""An ingest spreads its batches over the embedding peers by its own count of batches on
each, not by the seconds-old load their records advertised."""

from __future__ import annotations

from calinode.node.jobs.routing import Candidate
from calinode.node.rag.plan import EmbedderSpread


def _candidates(*peers: str) -> list[Candidate]:
    return [Candidate(peer_id=p, sha256="s" * 64, load=0, rtt_ms=1.0) for p in peers]


def test_batches_go_to_the_peer_with_the_fewest_of_ours() -> None:
    spread = EmbedderSpread()
    ranked = _candidates("a", "b", "c")  # the dispatcher's rank: a first
    chosen = []
    with spread.running(spread.order(ranked)[0].peer_id):
        chosen.append(spread.order(ranked)[0].peer_id)
        with spread.running(chosen[-1]):
            chosen.append(spread.order(ranked)[0].peer_id)
            with spread.running(chosen[-1]):
                order = [c.peer_id for c in spread.order(ranked)]
    assert chosen == ["b", "c"]  # a, then b, then c: one batch each
    assert order == ["a", "b", "c"]  # all even again: the dispatcher's rank decides
    assert [c.peer_id for c in spread.order(ranked)] == ["a", "b", "c"]  # all settled


def test_a_failed_batch_still_settles_its_count() -> None:
    spread = EmbedderSpread()
    ranked = _candidates("a", "b")
    try:
        with spread.running("a"):
            raise RuntimeError("embedder died")
    except RuntimeError:
        pass
    assert [c.peer_id for c in spread.order(ranked)] == ["a", "b"]
