"""Record sequence numbers only grow: across restarts (a reservation stored in the home) and
across clock steps (an injected clock; the machine's clock is never touched)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair

from calinode.node.p2p.peer_table import PeerTable, StaleRecord
from calinode.node.p2p.records import (
    SEQ_FILE,
    SEQ_RESERVE,
    RecordSigner,
    load_seq_reservation,
    store_seq_reservation,
    verify_record,
)
from calinode.protocol.messages import CapabilityRecord, Load

NOW_MS = 1_800_000_000_000
TEN_MINUTES_MS = 10 * 60 * 1000


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def signer(key: KeyPair, clock: Clock) -> RecordSigner:
    return RecordSigner(key, version="0", protocol_version="1.0.0", clock=clock)


def issue(s: RecordSigner) -> CapabilityRecord:
    return s.issue(addrs=("/ip4/127.0.0.1/tcp/1",), capabilities={"jobs": []},
                   load=Load(in_flight=0, queue_depth=0))


async def started(key: KeyPair, clock: Clock, home: Path) -> RecordSigner:
    s = signer(key, clock)
    await s.resume_from(home / SEQ_FILE)
    return s


async def test_restart_with_the_clock_ten_minutes_back_issues_accepted_records(
    tmp_path: Path,
) -> None:
    key, clock = create_new_key_pair(), Clock(NOW_MS)
    first = await started(key, clock, tmp_path)
    before = [issue(first) for _ in range(50)]
    clock.ms += 5000
    before.append(issue(first))

    peer = PeerTable("OTHER", dead_after=6.0, drop_after=30.0)
    assert peer.accept(before[-1], now=0.0, now_ms=clock.ms, direct=True)

    clock.ms -= TEN_MINUTES_MS  # the machine restarts with its clock stepped back
    second = await started(key, clock, tmp_path)
    after = issue(second)
    verify_record(after)
    assert after.seq > max(r.seq for r in before)
    assert peer.accept(after, now=1.0, now_ms=clock.ms + TEN_MINUTES_MS, direct=True)
    assert peer.get(after.peer_id).record == after  # type: ignore[union-attr]
    # and it keeps growing, one heartbeat after the other
    assert issue(second).seq > after.seq


async def test_without_the_reservation_the_old_scheme_would_be_ignored(tmp_path: Path) -> None:
    """The defect, shown with the signer as it was (no reservation): its new record is stale."""
    key, clock = create_new_key_pair(), Clock(NOW_MS)
    old = issue(signer(key, clock))
    clock.ms -= TEN_MINUTES_MS
    peer = PeerTable("OTHER", dead_after=6.0, drop_after=30.0)
    peer.accept(old, now=0.0, now_ms=NOW_MS, direct=True)
    assert not peer.accept(issue(signer(key, clock)), now=1.0, now_ms=NOW_MS, direct=True)


def test_relayed_record_of_a_node_ten_minutes_behind_is_stale() -> None:
    """What a slow clock still costs: third peers refuse its records relayed (issued_at_ms)."""
    s = signer(create_new_key_pair(), Clock(NOW_MS - TEN_MINUTES_MS))
    table = PeerTable("OTHER", dead_after=6.0, drop_after=30.0)
    record = issue(s)
    with pytest.raises(StaleRecord):
        table.accept(record, now=0.0, now_ms=NOW_MS, direct=False)
    assert table.accept(record, now=0.0, now_ms=NOW_MS, direct=True)


async def test_the_reservation_is_written_rarely_private_and_ahead(tmp_path: Path) -> None:
    path = tmp_path / SEQ_FILE
    clock = Clock(NOW_MS)
    s = await started(create_new_key_pair(), clock, tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = load_seq_reservation(path)
    assert stored == NOW_MS + SEQ_RESERVE
    for _ in range(1000):  # heartbeats over ~17 minutes: nothing to store yet
        clock.ms += 1000
        issue(s)
    assert not s.reservation_due
    clock.ms += SEQ_RESERVE // 2
    issue(s)
    assert s.reservation_due
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.keep_reserved, path)
        with trio.fail_after(60):
            while s.reservation_due:  # noqa: ASYNC110 - waiting for the writer thread
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert load_seq_reservation(path) == s.reserved == clock.ms + SEQ_RESERVE
    assert s.unreserved == 0


async def test_a_clock_jump_past_the_reservation_waits_at_it(tmp_path: Path) -> None:
    clock = Clock(NOW_MS)
    s = await started(create_new_key_pair(), clock, tmp_path)
    reserved = s.reserved
    assert reserved is not None
    clock.ms += 10 * SEQ_RESERVE  # a jump forward: seqs stop at what is stored
    seqs = [issue(s).seq for _ in range(3)]
    assert seqs[0] == reserved
    assert seqs[1:] == [reserved + 1, reserved + 2]  # still strictly increasing
    assert s.unreserved == 2


def test_a_damaged_reservation_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / SEQ_FILE
    path.write_text("not a number\n")
    assert load_seq_reservation(path) == 0
    assert (tmp_path / (SEQ_FILE + ".bad")).exists() and not path.exists()
    store_seq_reservation(path, 42)
    assert load_seq_reservation(path) == 42
