"""Private by default, one paste to join: the invite, with real daemons as OS processes."""

from __future__ import annotations

import pytest

from daemon_harness import Swarm, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_second_node_joins_from_the_invite_alone_and_a_node_without_it_cannot(
    swarm: Swarm,
) -> None:
    a = swarm.daemon("a")
    a.home.mkdir(parents=True)
    # a home with a key (what a node listening beyond loopback creates at its first start)
    run_cli("keygen", "--out", str(a.home / "swarm.key"))
    a.start()
    banner = a.log()
    assert "calinode start --join cal1." in banner, banner
    status = a.status()
    assert status["private_swarm"] and status["swarm"].startswith("private")
    invite = a.cli("invite")["invite"]
    assert invite in banner

    b = swarm.daemon("b").start("--join", invite)  # no --bootstrap, no key file
    outsider = swarm.daemon("outsider").start("--bootstrap", a.addr)
    wait_for(lambda: a.peers().get(b.peer_id, {}).get("alive"), 60, "b to join through the invite")
    assert b.cli("ping", a.peer_id, "-c", "1")["rtt_ms"]
    assert (b.home / "swarm.key").exists()  # kept: a restart needs no invite
    wait_for(lambda: b.peers().get(a.peer_id, {}).get("alive"), 60, "b to see a")
    assert outsider.peer_id not in a.peers() and set(outsider.peers()) == {outsider.peer_id}

    # b restarts without the invite and is still a member
    assert b.stop() == 0
    b.start("--bootstrap", a.addr)
    wait_for(lambda: b.peers().get(a.peer_id, {}).get("alive"), 60, "b back without invite")


def test_open_and_join_conflict_is_one_line(swarm: Swarm) -> None:
    proc = run_cli("start", "--home", str(swarm.root / "x"), "--open", "--join", "cal1.x",
                   check=False)
    assert proc.returncode != 0 and "--open" in proc.stderr and "Traceback" not in proc.stderr
