"""``calinode doctor`` against real daemons (OS processes on 127.0.0.1), run as the real CLI.

One private swarm serves every test of the module (a daemon with models costs seconds to
start): ``a`` serves the default models from its own copy of the model files (so that one can
be corrupted without touching the other tests' shared copy) and ``b`` joins it without
models. Each test then adds the fault it is about and checks that the doctor reports exactly
that problem, by its stable ``check`` code, with exit status 10 (0 when healthy):

- nothing wrong: both nodes exit 0 with no finding;
- one byte of ``a``'s embedding model flipped on disk: ``model_corrupt`` for that model only;
- a daemon with another swarm key bootstrapping to ``b``: it is refused at the handshake, and
  ``b`` reports ``bad_handshake`` naming the source address;
- a daemon whose wall clock runs 10 minutes behind (the test-only
  ``--test-only-clock-offset``) joining ``a``: ``a`` reports ``clock_skew`` for that peer.

Every test also checks that the swarm still serves (a ping job answered) afterwards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calinode.node.cli.doctor import EXIT_PROBLEMS
from daemon_harness import Daemon, Swarm, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULT_MODELS = ("minilm-l6-int8", "smollm2-135m")


def doctor(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    """``calinode doctor --json`` on ``daemon``'s home: its exit status and report."""
    proc = run_cli("doctor", "--home", str(daemon.home), "--json", check=False, timeout=120)
    assert proc.returncode in (0, EXIT_PROBLEMS), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def problems(report: dict[str, Any]) -> list[dict[str, str]]:
    return [f for f in report["findings"] if f["severity"] == "problem"]


def keygen(path: Path) -> Path:
    run_cli("keygen", "--out", str(path))
    return path


def still_serving(daemon: Daemon, peer: Daemon) -> None:
    """The node answers a ping job to its peer: it is alive and serving."""
    reply = daemon.api("ping", peer.peer_id, count=1)
    assert reply["served_by"] == peer.peer_id


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory,
            prepared_models: Path) -> Iterator[tuple[Swarm, Daemon, Daemon, Path]]:
    root = tmp_path_factory.mktemp("doctor")
    swarm = Swarm(root)
    key = keygen(root / "swarm.key")
    a = swarm.daemon("a", models=prepared_models)
    (a.home / "models").mkdir(parents=True)
    for name in DEFAULT_MODELS:  # a's own copy: one of its files gets corrupted below
        shutil.copytree(prepared_models / name, a.home / "models" / name)
    b = swarm.daemon("b")
    try:
        a.start("--swarm-key", str(key))
        b.start("--swarm-key", str(key), "--bootstrap", a.addr)
        wait_for(lambda: a.peers()[b.peer_id]["alive"] and b.peers()[a.peer_id]["alive"],
                 60, "a and b to see each other")
        yield swarm, a, b, key
    finally:
        swarm.close()


def test_a_healthy_swarm_has_nothing_to_fix(healthy: tuple[Swarm, Daemon, Daemon, Path]) -> None:
    _, a, b, _ = healthy
    for daemon, peer in ((a, b), (b, a)):
        status, report = doctor(daemon)
        assert report["findings"] == [], report["findings"]
        assert status == 0 and report["ok"]
        # it did look: the peer's clock was probed, a's model files were hashed
        [row] = report["facts"]["node"]["peers"]
        assert row["peer_id"] == peer.peer_id and abs(row["clock"]["skew_ms"]) < 5_000
    a_models = {m["name"] for m in doctor(a)[1]["facts"]["local"]["models"]}
    assert a_models == set(DEFAULT_MODELS)


def test_a_corrupted_model_file_is_reported_and_nothing_else(
        healthy: tuple[Swarm, Daemon, Daemon, Path]) -> None:
    _, a, b, _ = healthy
    onnx = next((a.home / "models" / "minilm-l6-int8").glob("*.onnx"))
    original = onnx.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF  # same size: only the sha256 can tell
    onnx.write_bytes(bytes(corrupted))
    try:
        status, report = doctor(a)
        assert status == EXIT_PROBLEMS
        assert [(f["check"], f["subject"]) for f in report["findings"]] == [
            ("model_corrupt", "model minilm-l6-int8")], report["findings"]
        assert "sha256 mismatch" in report["findings"][0]["what"]
        assert "calinode models remove minilm-l6-int8" in report["findings"][0]["fix"]
    finally:
        onnx.write_bytes(original)
    still_serving(a, b)
    assert doctor(a)[0] == 0  # repaired: nothing to fix again


def test_a_peer_with_another_swarm_key_is_reported(
        healthy: tuple[Swarm, Daemon, Daemon, Path]) -> None:
    swarm, a, b, _ = healthy
    stranger = swarm.daemon("stranger")
    other_key = keygen(swarm.root / "other.key")
    stranger.start("--swarm-key", str(other_key), "--bootstrap", b.addr)
    try:
        wait_for(lambda: b.status()["rejected_input"].get("bad_handshake", 0) > 0, 60,
                 "b to refuse the stranger's handshake")
        status, report = doctor(b)
        assert status == EXIT_PROBLEMS
        assert [f["check"] for f in report["findings"]] == ["bad_handshake"], report["findings"]
        finding = report["findings"][0]
        assert "127.0.0.1" in finding["subject"]
        assert "another swarm key" in finding["what"] and "calinode invite" in finding["fix"]
        assert stranger.peer_id not in b.peers()  # refused: never became a peer
    finally:
        stranger.kill()
    still_serving(b, a)


def test_a_peer_clock_ten_minutes_behind_is_reported(
        healthy: tuple[Swarm, Daemon, Daemon, Path]) -> None:
    swarm, a, b, key = healthy
    late = swarm.daemon("late")
    late.start("--swarm-key", str(key), "--bootstrap", a.addr,
               "--test-only-clock-offset", "-600")
    try:
        wait_for(lambda: a.peers()[late.peer_id]["alive"], 60, "a to see the late peer")
        status, report = doctor(a)
        assert status == EXIT_PROBLEMS
        assert [(f["check"], f["subject"]) for f in problems(report)] == [
            ("clock_skew", f"peer {late.peer_id[:16]}...")], report["findings"]
        assert "10.0 min behind" in problems(report)[0]["what"]
        skew = {p["peer_id"]: p["clock"]["skew_ms"] for p in report["facts"]["node"]["peers"]}
        assert -610_000 < skew[late.peer_id] < -590_000
        assert abs(skew[b.peer_id]) < 5_000
    finally:
        late.kill()
    still_serving(a, b)
