"""node/rag/plan.py: the coordinator's pure decisions (which holder is asked for which shard,
when a slow round is hedged, what a user is told about a replication the swarm cannot give),
and node/rag/writes.py's retry of an OVERLOADED replica under trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from calinode.node.index.placement import PlacementMap
from calinode.node.rag.plan import (
    HEDGE_AFTER,
    HEDGE_BYTES_PER_SECOND,
    ShardPlan,
    hedge_after,
    next_groups,
    replication_notes,
    shard_plans,
    write_quorum_problem,
)
from calinode.node.rag.writes import WRITE_ATTEMPTS, WRITE_TIMEOUT, retry_overloaded
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode, JobError


def definition(**overrides: object) -> CollectionDef:
    settings: dict[str, object] = dict(
        name="papers", model="m", model_sha256="0" * 64, dim=4, pooling="mean",
        normalize=True, query_prefix="", passage_prefix="", shards=4, replicas=2)
    settings.update(overrides)
    return CollectionDef(**settings)  # type: ignore[arg-type]


# -- shard plans -------------------------------------------------------------------------------

def test_shard_plans_put_live_owners_first_then_other_holders_sorted() -> None:
    d = definition(shards=2, replicas=2)
    placement = PlacementMap.build("papers", 2, ["a", "b", "c", "d"], 2)
    owners0 = placement.owners(0)
    others = sorted({"a", "b", "c", "d"} - set(owners0))
    holders = {0: {p: "x" for p in ["d", "c", "b", "a"]}, 1: {}}
    plans = shard_plans(d, placement, holders)
    assert plans[0] == ShardPlan(0, [*owners0, *others])
    assert plans[1] == ShardPlan(1, [])  # no live holder: the shard will be missing


def test_shard_plans_skip_an_owner_that_does_not_hold_the_shard() -> None:
    d = definition(shards=1, replicas=2)
    placement = PlacementMap.build("papers", 1, ["a", "b"], 2)
    _first, second = placement.owners(0)
    (plan,) = shard_plans(d, placement, {0: {second: "x", "z": "y"}})
    assert plan.holders == [second, "z"]


# -- hedging -----------------------------------------------------------------------------------

def test_hedge_delay_grows_with_the_bytes_the_round_waits_for() -> None:
    assert hedge_after(0) == HEDGE_AFTER
    assert hedge_after(HEDGE_BYTES_PER_SECOND) == pytest.approx(HEDGE_AFTER + 1.0)


def test_next_groups_asks_each_shard_on_its_first_holder_grouped_by_holder() -> None:
    holders = {0: ["a", "b"], 1: ["a", "c"], 2: ["b", "a"]}
    tried: set[tuple[str, int]] = set()
    inflight = dict.fromkeys(holders, 0)
    groups = next_groups(holders, {}, inflight, tried, hedge=True)
    assert groups == {"a": [0, 1], "b": [2]}
    assert tried == {("a", 0), ("a", 1), ("b", 2)}


def test_next_groups_between_hedges_only_retries_shards_with_nothing_in_flight() -> None:
    holders = {0: ["a", "b"], 1: ["a", "c"]}
    tried = {("a", 0), ("a", 1)}
    inflight = {0: 0, 1: 1}  # shard 0's attempt failed; shard 1's is still waiting
    assert next_groups(holders, {}, inflight, tried, hedge=False) == {"b": [0]}
    # a slow round (hedge): shard 1 goes to its next holder too, shard 0 has none left
    assert next_groups(holders, {}, inflight, tried, hedge=True) == {"c": [1]}
    assert next_groups(holders, {}, inflight, tried, hedge=True) == {}  # all tried


def test_next_groups_leave_answered_shards_alone() -> None:
    holders = {0: ["a", "b"], 1: ["a", "b"]}
    groups = next_groups(holders, {0: ("a", None)}, {0: 0, 1: 0}, set(), hedge=True)
    assert groups == {"a": [1]}


# -- replication -------------------------------------------------------------------------------

def test_replication_notes_name_missing_copies_and_an_unreachable_quorum() -> None:
    assert replication_notes(2, 2, 3) == []
    (copies,) = replication_notes(3, 1, 2)
    assert "3 replicas asked, but only 2 live index peers" in copies
    assert "each shard has 2 copies" in copies
    one = replication_notes(2, 2, 1)
    assert len(one) == 2 and "1 copy" in one[0] and "only 1 index peer is live" in one[1]


def test_write_quorum_problem_only_when_no_shard_can_reach_its_quorum() -> None:
    assert write_quorum_problem(definition(replicas=3), live=2) is None  # majority 2 of 2
    problem = write_quorum_problem(definition(replicas=3, write_quorum=3), live=2)
    assert problem is not None
    assert "needs 3 durable replicas" in problem and "--replicas 2" in problem
    lone = write_quorum_problem(definition(replicas=2, write_quorum=2), live=0)
    assert lone is not None and "only 0 index peers are live" in lone and "--replicas 1" in lone


# -- writes: OVERLOADED back-off ---------------------------------------------------------------

async def test_retry_overloaded_backs_off_until_the_replica_takes_the_write(
        autojump_clock: trio.testing.MockClock) -> None:
    timeouts: list[float] = []

    async def call(timeout: float) -> str:
        timeouts.append(timeout)
        if len(timeouts) < 3:
            raise JobError("busy", code=ErrorCode.OVERLOADED)
        return "done"

    started = trio.current_time()
    retries: list[None] = []
    assert await retry_overloaded(call, lambda: retries.append(None)) == "done"
    assert len(timeouts) == 3 and len(retries) == 2  # each retry is reported (a metric)
    assert timeouts[0] == WRITE_TIMEOUT and timeouts[1] < WRITE_TIMEOUT  # one budget
    assert trio.current_time() > started  # it waited between attempts


async def test_retry_overloaded_gives_up_after_its_attempts_and_on_other_errors(
        autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def busy(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise JobError("busy", code=ErrorCode.OVERLOADED)

    with pytest.raises(JobError) as overloaded:
        await retry_overloaded(busy)
    assert overloaded.value.code == ErrorCode.OVERLOADED and calls == WRITE_ATTEMPTS

    async def gone(timeout: float) -> None:
        nonlocal calls
        calls += 1
        raise JobError("down", code=ErrorCode.PEER_UNREACHABLE)

    calls = 0
    with pytest.raises(JobError) as unreachable:
        await retry_overloaded(gone)
    assert unreachable.value.code == ErrorCode.PEER_UNREACHABLE and calls == 1
