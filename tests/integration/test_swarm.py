"""The done-when of the swarm foundation, with real daemons and the real CLI.

The deadlines below are generous polling limits, not timing assertions: the measured times
are printed (run with ``-s``) and reported in the README.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from calinode.protocol.errors import ErrorCode, exit_status
from daemon_harness import Daemon, Swarm, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def error_code(proc: subprocess.CompletedProcess[str]) -> ErrorCode:
    """The code of the one error line a failed command printed; its exit status must be the
    code's (protocol/errors.py ``EXIT_STATUS``)."""
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("calinode: error: "), proc.stderr
    code = ErrorCode(line.removeprefix("calinode: error: ").split(":", 1)[0])
    assert proc.returncode == exit_status(code), (proc.returncode, line)
    return code


def all_alive(daemons: list[Daemon], expected: set[str]) -> bool:
    for daemon in daemons:
        rows = daemon.peers()
        if set(rows) != expected or not all(row["alive"] for row in rows.values()):
            return False
        if not all("ping" in row["capabilities"]["jobs"] for row in rows.values()):
            return False
    return True


def test_three_node_swarm_forms_detects_death_and_rejoins(swarm: Swarm) -> None:
    n1 = swarm.daemon("n1").start()
    n2 = swarm.daemon("n2").start("--bootstrap", n1.addr)
    n3 = swarm.daemon("n3").start("--bootstrap", n1.addr)
    nodes = [n1, n2, n3]
    ids = {n.peer_id for n in nodes}
    took = wait_for(lambda: all_alive(nodes, ids), 20, "all three peers on every node")
    print(f"\nswarm of 3 formed in {took:.2f} s")

    status = n2.status()
    assert {"peer_id", "addrs", "version", "capabilities", "peers"} <= set(status)
    row = n2.peers()[n3.peer_id]
    assert {"peer_id", "addrs", "capabilities", "load", "alive", "last_seen"} <= set(row)

    dead_id = n3.peer_id
    n3.kill()  # kill -9
    took = wait_for(lambda: all(not n.peers()[dead_id]["alive"] for n in (n1, n2)), 20,
                    "the killed node marked dead")
    print(f"kill -9 detected in {took:.2f} s")

    n3.start("--bootstrap", n1.addr)  # same home, same port
    assert n3.peer_id == dead_id
    took = wait_for(lambda: all_alive(nodes, ids), 30, "the restarted node to rejoin")
    print(f"restarted node rejoined in {took:.2f} s")

    assert n1.stop() == 0 and not n1.node_file.exists()


def test_bootstrap_node_restart_is_redialled(swarm: Swarm) -> None:
    n1 = swarm.daemon("n1").start()
    n2 = swarm.daemon("n2").start("--bootstrap", n1.addr)
    ids = {n1.peer_id, n2.peer_id}
    wait_for(lambda: all_alive([n1, n2], ids), 20, "two peers")
    n1.kill()
    wait_for(lambda: not n2.peers()[n1.peer_id]["alive"], 20, "n1 dead on n2")
    n1.start()  # no bootstrap: n2 must find it again (py-libp2p's negative dial cache)
    took = wait_for(lambda: all_alive([n1, n2], ids), 30, "n1 back on both")
    print(f"\nrestarted bootstrap node rejoined in {took:.2f} s")


def test_sigstopped_peer_is_marked_dead_then_recovers(swarm: Swarm) -> None:
    n1 = swarm.daemon("n1").start()
    n2 = swarm.daemon("n2").start("--bootstrap", n1.addr)
    ids = {n1.peer_id, n2.peer_id}
    wait_for(lambda: all_alive([n1, n2], ids), 20, "two peers")
    n2.signal(signal.SIGSTOP)
    try:
        took = wait_for(lambda: not n1.peers()[n2.peer_id]["alive"], 20, "stopped peer dead")
        print(f"\nSIGSTOP detected in {took:.2f} s")
        # jobs to a frozen peer fail with a clear error before their deadline, never hang
        proc = run_cli("ping", n2.peer_id, "-c", "1", "--timeout", "1", "--home", str(n1.home),
                       check=False)
        assert error_code(proc) in (ErrorCode.DEADLINE_EXCEEDED, ErrorCode.PEER_UNREACHABLE)
    finally:
        n2.signal(signal.SIGCONT)
    wait_for(lambda: all_alive([n1, n2], ids), 20, "resumed peer alive again")


def test_other_swarm_key_cannot_join_run_jobs_or_see_peers(swarm: Swarm, tmp_path: Path) -> None:
    key, other = tmp_path / "swarm.key", tmp_path / "other.key"
    run_cli("keygen", "--out", str(key))
    run_cli("keygen", "--out", str(other))
    n1 = swarm.daemon("n1").start("--swarm-key", str(key))
    n2 = swarm.daemon("n2").start("--swarm-key", str(key), "--bootstrap", n1.addr)
    outsider = swarm.daemon("outsider").start("--swarm-key", str(other), "--bootstrap", n1.addr)
    wait_for(lambda: all_alive([n1, n2], {n1.peer_id, n2.peer_id}), 20, "the keyed pair")
    proc = run_cli("ping", n1.peer_id, "-c", "1", "--timeout", "2", "--home",
                   str(outsider.home), check=False)
    assert error_code(proc) is ErrorCode.UNKNOWN_PEER
    assert set(outsider.peers()) == {outsider.peer_id}
    assert outsider.peer_id not in n1.peers() and outsider.peer_id not in n2.peers()


def test_allowlist_refuses_other_peers(swarm: Swarm) -> None:
    friend = swarm.daemon("friend")
    friend_id = run_cli("id", "--home", str(friend.home)).stdout.strip()
    n1 = swarm.daemon("n1").start("--allow", friend_id)
    friend.start("--bootstrap", n1.addr)
    stranger = swarm.daemon("stranger").start("--bootstrap", n1.addr)
    wait_for(lambda: all_alive([n1, friend], {n1.peer_id, friend_id}), 20, "friend admitted")
    assert stranger.peer_id not in n1.peers()
    assert set(stranger.peers()) == {stranger.peer_id}
    assert friend.cli("ping", n1.peer_id, "-c", "1")["served_by"] == n1.peer_id


def test_garbage_on_the_wire_does_not_hurt_the_node(swarm: Swarm) -> None:
    n1 = swarm.daemon("n1").start()
    n2 = swarm.daemon("n2").start("--bootstrap", n1.addr)
    wait_for(lambda: all_alive([n1, n2], {n1.peer_id, n2.peer_id}), 20, "two peers")
    for garbage in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", struct.pack(">I", 0xFFFFFFFF) * 64):
        with socket.create_connection(("127.0.0.1", n1.port), timeout=5) as sock:
            sock.sendall(garbage)
    result = n2.cli("ping", n1.peer_id, "-c", "3")
    assert result["served_by"] == n1.peer_id and len(result["rtt_ms"]) == 3
    assert n1.status()["peers"]["alive"] == 1


def test_cli_errors_are_one_clear_line(swarm: Swarm, tmp_path: Path) -> None:
    proc = run_cli("status", "--api", "127.0.0.1:1", check=False)
    assert error_code(proc) is ErrorCode.PEER_UNREACHABLE
    assert proc.stderr.count("\n") == 1 and "calinode start" in proc.stderr
    n1 = swarm.daemon("n1").start()
    proc = run_cli("ping", "not-a-peer", "--home", str(n1.home), check=False)
    assert error_code(proc) is ErrorCode.BAD_REQUEST
    proc = run_cli("start", "--home", str(tmp_path / "x"), "--listen", "nonsense", check=False)
    assert error_code(proc) is ErrorCode.CONFIG and "multiaddr" in proc.stderr


def test_mdns_finds_peers_without_bootstrap(swarm: Swarm) -> None:
    mdns = ("--mdns", "--mdns-interface", "127.0.0.1")
    n1 = swarm.daemon("n1").start(*mdns)
    n2 = swarm.daemon("n2").start(*mdns)
    took = wait_for(lambda: all_alive([n1, n2], {n1.peer_id, n2.peer_id}), 30,
                    "mDNS discovery on loopback")
    print(f"\nmDNS discovery took {took:.2f} s")
