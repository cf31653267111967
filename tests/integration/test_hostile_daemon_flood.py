"""A relayed-record flood against a real daemon, and what it costs the daemon's CPU.

Three ``calinode start`` processes; 50 hostile peers (real py-libp2p hosts in this test process)
each send node 1 a peer exchange relaying 100 records of peers nobody has met, every second for
about 10 s: 5000 records a second from 50 senders. Issue 8 saw such records make a node dial
1024 attacker-chosen addresses a second (CPU 2% -> 21%). Now they wait as capped candidates and
are dialled under a token bucket.

The daemon's CPU time (utime + stime from ``/proc/PID/stat``) over the same wall time, idle and
under the flood, is printed for the issue's note, never asserted. What is asserted is behaviour:
every daemon still alive and serving (``calinode ping`` between them), node 1 counted the
records its caps pushed out (``rejected_input.relay_cap``) and holds a bounded number of
candidates.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from calinode.node.p2p.candidates import RelayedCandidates
from daemon_harness import Daemon, Swarm, wait_for
from hostile_peer import (
    HostilePeer,
    flood_records,
    open_hostile_peers,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENDERS = 50
PER_SENDER = 100
WINDOW = 10.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood_batches() -> list[list[dict[str, Any]]]:
    """Per sender, ``PER_SENDER`` signed records of fresh peers whose addresses are dead."""
    return flood_records(SENDERS, PER_SENDER)


async def exchange_quietly(evil: HostilePeer, peer_id: str, px: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):  # the node may reset the stream: that is a refusal
        await evil.exchange(peer_id, px)


def flood(victim: Daemon, batches: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Idle CPU over ``WINDOW`` s, then the flood for ``WINDOW`` s; both in CPU seconds."""
    assert victim.proc is not None
    pid = victim.proc.pid
    measured: dict[str, float] = {}

    async def main() -> None:
        async with open_hostile_peers(SENDERS) as evils:
            for evil in evils:
                await evil.connect(victim.addr)
            before, started = cpu_seconds(pid), trio.current_time()
            await trio.sleep(WINDOW)
            measured["idle_cpu"] = cpu_seconds(pid) - before
            measured["idle_wall"] = trio.current_time() - started

            rounds = 0
            before, started = cpu_seconds(pid), trio.current_time()
            while trio.current_time() - started < WINDOW:
                round_started = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for evil, batch in zip(evils, batches, strict=True):
                        nursery.start_soon(exchange_quietly, evil, victim.peer_id,
                                           evil.exchange_wire(known=batch))
                rounds += 1
                await trio.sleep(max(0.0, 1.0 - (trio.current_time() - round_started)))
            measured["flood_cpu"] = cpu_seconds(pid) - before
            measured["flood_wall"] = trio.current_time() - started
            measured["rounds"] = rounds

    trio.run(main)
    return measured


def test_relayed_record_flood_against_a_real_daemon(swarm: Swarm) -> None:
    a = swarm.daemon("a").start()
    b = swarm.daemon("b").start("--bootstrap", a.addr)
    c = swarm.daemon("c").start("--bootstrap", a.addr)
    daemons = (a, b, c)
    ids = {d.peer_id for d in daemons}
    wait_for(lambda: all(ids - {d.peer_id} <= {p for p, r in d.peers().items() if r["alive"]}
                         for d in daemons), 60, "the three daemons to see each other")

    batches = flood_batches()  # signing costs: before any measurement
    flooded = {r["peer_id"] for batch in batches for r in batch}
    m = flood(a, batches)
    print(f"\nrelayed-record flood on a real daemon ({SENDERS} senders x {PER_SENDER} records, "
          f"{m['rounds']:.0f} rounds in {m['flood_wall']:.1f} s): daemon CPU "
          f"{m['idle_cpu']:.2f} s in {m['idle_wall']:.1f} s idle "
          f"({100 * m['idle_cpu'] / m['idle_wall']:.1f}%) vs {m['flood_cpu']:.2f} s in "
          f"{m['flood_wall']:.1f} s under the flood "
          f"({100 * m['flood_cpu'] / m['flood_wall']:.1f}%)")

    status = a.status()
    print(f"node 1 after the flood: candidates {status['peers']['candidates']}, rejected "
          f"{status['rejected_input']}")
    for daemon in daemons:
        assert daemon.proc is not None and daemon.proc.poll() is None, (
            f"{daemon.name} exited with status {daemon.proc.poll()}:\n{daemon.log()}")
    # a connection the flood starved may have been dropped; membership mends it (the safety
    # net is a minute): then every daemon serves every other
    wait_for(lambda: all(ids - {d.peer_id} <= {p for p, r in d.peers().items() if r["alive"]}
                         for d in daemons), 60, "the three daemons to see each other again")
    for source, target in ((a, b), (b, c), (c, a), (a, c), (b, a), (c, b)):
        assert source.cli("ping", target.peer_id, "-c", "1")["served_by"] == target.peer_id
    assert status["rejected_input"]["relay_cap"] > 0
    assert 0 < status["peers"]["candidates"] <= RelayedCandidates().total
    # no relayed stranger became a member of node 1's table
    assert not flooded & set(a.peers())
