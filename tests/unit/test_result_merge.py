"""Exact merge of per-shard top-k lists, and the shards that did not answer."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calinode.node.index.merge import ShardHit, hit_order, merge_topk, missing_shards

#: 200 examples with the "dev" profile, 500 with "ci".
EXAMPLES = max(200, settings().max_examples // 20)

# Few distinct ids and scores, so that ties and duplicates are common.
scores = st.sampled_from([1.0, 0.5, 0.25, 0.0, -0.5]) | st.floats(-1.0, 1.0)


@st.composite
def shard_lists(draw: st.DrawFn, *, replicas: bool) -> list[list[ShardHit]]:
    """Per-shard hit lists. Without ``replicas`` every (doc_id, chunk) lives in one shard, as
    placement guarantees; with them, a shard may have answered twice (from two peers)."""
    shards = draw(st.integers(0, 6))
    lists: list[list[ShardHit]] = []
    for shard in range(shards):
        keys = draw(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)),
                             max_size=8, unique=True))
        peers = draw(st.lists(st.sampled_from(["p1", "p2"]), min_size=1,
                              max_size=2 if replicas else 1, unique=True))
        for peer in peers:
            hits = [ShardHit(f"{shard}-{doc}", chunk, draw(scores), shard, peer)
                    for doc, chunk in draw(st.permutations(keys))]
            lists.append(hits)
    return lists


def reference(per_shard: list[list[ShardHit]], k: int) -> list[ShardHit]:
    """A global sort of the union, keeping the best copy of each (doc_id, chunk)."""
    best: dict[tuple[str, int], ShardHit] = {}
    for hit in (h for hits in per_shard for h in hits):
        key = (hit.doc_id, hit.chunk)
        if key not in best or hit_order(hit) < hit_order(best[key]):
            best[key] = hit
    ranked = sorted(best.values(), key=lambda h: (-h.score, h.doc_id, h.chunk))
    return ranked[:k]


@settings(max_examples=EXAMPLES)
@given(per_shard=shard_lists(replicas=False), k=st.integers(0, 60))
def test_merge_equals_a_global_sort_of_the_union(per_shard: list[list[ShardHit]], k: int) -> None:
    union = [hit for hits in per_shard for hit in hits]
    expected = sorted(union, key=lambda h: (-h.score, h.doc_id, h.chunk))[:k]
    assert merge_topk(per_shard, k) == expected
    assert merge_topk(per_shard[::-1], k) == expected  # the order of answers does not matter


@settings(max_examples=EXAMPLES)
@given(per_shard=shard_lists(replicas=True), k=st.integers(0, 60))
def test_merge_with_replicas_keeps_the_best_copy(per_shard: list[list[ShardHit]], k: int) -> None:
    merged = merge_topk(per_shard, k)
    assert merged == reference(per_shard, k)
    assert len({(h.doc_id, h.chunk) for h in merged}) == len(merged)
    assert [h.score for h in merged] == sorted((h.score for h in merged), reverse=True)


@settings(max_examples=EXAMPLES)
@given(per_shard=shard_lists(replicas=False), k=st.integers(1, 20))
def test_merge_of_per_shard_topk_equals_topk_of_everything(
    per_shard: list[list[ShardHit]], k: int
) -> None:
    """The point of the exercise: shards returning only their own top-k lose nothing."""
    truncated = [sorted(hits, key=hit_order)[:k] for hits in per_shard]
    assert merge_topk(truncated, k) == merge_topk(per_shard, k)


def test_k_larger_than_all_hits() -> None:
    hits = [[ShardHit("a", 0, 0.5, 0, "p"), ShardHit("b", 0, 0.9, 0, "p")],
            [ShardHit("c", 1, 0.7, 1, "q")]]
    assert [h.doc_id for h in merge_topk(hits, 100)] == ["b", "c", "a"]


def test_empty_inputs() -> None:
    assert merge_topk([], 10) == []
    assert merge_topk([[], []], 10) == []
    assert merge_topk([[ShardHit("a", 0, 1.0, 0, "p")]], 0) == []


def test_ties_break_by_doc_id_then_chunk() -> None:
    hits = [ShardHit("b", 0, 0.5, 1, "p"), ShardHit("a", 2, 0.5, 0, "p"),
            ShardHit("a", 1, 0.5, 2, "q"), ShardHit("c", 0, 0.6, 3, "q")]
    expected = [("c", 0), ("a", 1), ("a", 2), ("b", 0)]
    for seed in range(10):
        random.Random(seed).shuffle(hits)
        per_shard = [[h] for h in hits]
        assert [(h.doc_id, h.chunk) for h in merge_topk(per_shard, 4)] == expected
    assert [(h.doc_id, h.chunk) for h in merge_topk([hits], 2)] == expected[:2]


def test_duplicate_from_two_replicas_keeps_the_best_then_the_first_peer() -> None:
    stale = ShardHit("a", 0, 0.4, 3, "p1")
    fresh = ShardHit("a", 0, 0.8, 3, "p2")
    assert merge_topk([[stale], [fresh]], 5) == [fresh]
    same_p1, same_p2 = ShardHit("a", 0, 0.8, 3, "p1"), fresh
    assert merge_topk([[same_p2], [same_p1]], 5) == [same_p1]


def test_nan_scores_and_bad_k_are_rejected() -> None:
    with pytest.raises(ValueError):
        merge_topk([[ShardHit("a", 0, math.nan, 0, "p")]], 1)
    with pytest.raises(ValueError):
        merge_topk([], -1)


def test_infinite_scores_sort_like_numbers() -> None:
    hits = [[ShardHit("a", 0, -math.inf, 0, "p"), ShardHit("b", 0, math.inf, 0, "p")]]
    assert [h.doc_id for h in merge_topk(hits, 2)] == ["b", "a"]


def test_missing_shards() -> None:
    assert missing_shards({0, 2, 3}, 5) == [1, 4]
    assert missing_shards(set(), 3) == [0, 1, 2]
    assert missing_shards(set(range(16)), 16) == []
    assert missing_shards(set(), 0) == []
    for answered, shards in [({5}, 5), ({-1}, 3)]:
        with pytest.raises(ValueError):
            missing_shards(answered, shards)
    with pytest.raises(ValueError):
        missing_shards(set(), -1)


@settings(max_examples=EXAMPLES)
@given(answered=st.sets(st.integers(0, 31)), shards=st.integers(32, 40))
def test_missing_shards_complements_the_answers(answered: set[int], shards: int) -> None:
    missing = missing_shards(answered, shards)
    assert sorted(set(missing) | answered) == list(range(shards))
    assert not set(missing) & answered
    assert missing == sorted(missing)
