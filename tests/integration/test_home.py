"""One home, one daemon; one port, one node; a private home (real daemons as OS processes)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from daemon_harness import CALINODE, FAST, Swarm, _clean_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_again(home: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    """A second ``calinode start`` that is expected to exit by itself at once."""
    return subprocess.run(
        [CALINODE, "start", "--home", str(home), "--listen", f"/ip4/127.0.0.1/tcp/{port}",
         "--api", "127.0.0.1:0", "--no-models", *FAST, *extra],
        capture_output=True, text=True, timeout=120, env=_clean_env())


def test_a_second_daemon_on_the_same_home_exits_and_leaves_the_first_alone(
    swarm: Swarm,
) -> None:
    a = swarm.daemon("a").start()
    before = a.node_file.read_text()
    assert a.proc is not None
    second = start_again(a.home, free_port())
    assert second.returncode != 0
    assert f"pid {a.proc.pid}" in second.stderr and "Traceback" not in second.stderr
    assert a.node_file.read_text() == before  # the first one's node.json is untouched
    assert a.status()["peer_id"] == a.peer_id


def test_a_taken_listen_port_is_a_start_up_error(swarm: Swarm) -> None:
    a = swarm.daemon("a").start()
    other = swarm.root / "b"
    taken = start_again(other, a.port)
    assert taken.returncode != 0
    assert f"/ip4/127.0.0.1/tcp/{a.port}" in taken.stderr, taken.stderr
    assert "Traceback" not in taken.stderr
    assert not (other / "node.json").exists()
    assert a.status()["peer_id"] == a.peer_id
    # and a port some other program holds, without SO_REUSEPORT
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert start_again(other, port).returncode != 0


def test_a_taken_api_address_is_a_start_up_error(swarm: Swarm) -> None:
    a = swarm.daemon("a").start()
    api = a.info["api"]
    taken = subprocess.run(
        [CALINODE, "start", "--home", str(swarm.root / "c"), "--listen",
         f"/ip4/127.0.0.1/tcp/{free_port()}", "--api", api, "--no-models", *FAST],
        capture_output=True, text=True, timeout=120, env=_clean_env())
    assert taken.returncode != 0 and api in taken.stderr, taken.stderr
    assert "Traceback" not in taken.stderr
    assert a.status()["peer_id"] == a.peer_id


def test_the_home_and_its_files_are_private(swarm: Swarm) -> None:
    old = os.umask(0o022)  # a typical user umask: files would be 0644
    try:
        a = swarm.daemon("a").start("--index")
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.home.stat().st_mode) == 0o700
    for path in a.home.rglob("*"):
        if path.is_file() and path.name != "log":  # the harness writes the log itself
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
