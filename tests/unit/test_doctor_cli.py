"""The pieces of ``calinode doctor`` and ``calinode bench`` that need no node: the local
checks on a home's files, the printed report, the bench plan and table, the typed views of
the ``ping``/``echo`` replies they read, and the capped record of failed handshakes."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from calinode.models.manifest import MANIFEST_FILE, ModelFile, ModelManifest, sha256_file
from calinode.node.cli.bench import COLUMNS, bench_cells, plan
from calinode.node.cli.doctor import _render, local_facts
from calinode.node.cli.main import build_parser, main
from calinode.node.cli.render import print_table
from calinode.node.doctor_rules import EXIT_PROBLEMS, judge
from calinode.node.p2p.reachability import HandshakeFailures
from calinode.node.rejections import Rejections
from calinode.protocol.builtin_replies import EchoReply, PingReply
from calinode.protocol.errors import RemoteProtocolError

NOW_MS = 1_764_540_000_000


def install_fake_model(home: Path, name: str = "tiny-embed") -> Path:
    folder = home / "models" / name
    folder.mkdir(parents=True)
    onnx = folder / "model.onnx"
    onnx.write_bytes(b"weights" * 1000)
    manifest = ModelManifest(name=name, kind="embed", dim=4, pooling="mean", files=(
        ModelFile(path="model.onnx", sha256=sha256_file(onnx), size=onnx.stat().st_size),))
    (folder / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return onnx


def test_local_facts_hash_models_and_read_file_modes(tmp_path: Path) -> None:
    onnx = install_fake_model(tmp_path)
    token = tmp_path / "api.token"
    token.write_text("secret")
    token.chmod(0o600)
    node = {"models": [{"name": "tiny-embed", "kind": "embed", "sha256": "a" * 64}],
            "swarm": {"key_file": None}}
    local = local_facts(tmp_path, node)
    assert local["models"] == [{"name": "tiny-embed", "problems": []}]
    assert local["token"]["mode"] == 0o600 and local["token"]["uid"] == os.getuid()
    assert local["swarm_keys"] == [{"path": str(tmp_path / "swarm.key"), "exists": False}]
    assert local["disk"]["free_bytes"] > 0
    assert judge(None, local | {"node_error": "x"})[0].check == "node_unreachable"
    assert [f.check for f in judge(None, local | {"node_error": "x"})] == ["node_unreachable"]

    data = bytearray(onnx.read_bytes())
    data[100] ^= 1
    onnx.write_bytes(bytes(data))
    token.chmod(0o644)
    local = local_facts(tmp_path, node)
    assert local["models"] == [{"name": "tiny-embed", "problems": ["model.onnx: sha256 mismatch"]}]
    assert sorted(f.check for f in judge(None, local | {"node_error": "x"})) == [
        "model_corrupt", "node_unreachable", "token_permissions"]


def test_a_served_model_missing_from_the_home_is_reported(tmp_path: Path) -> None:
    node = {"models": [{"name": "gone", "kind": "embed", "sha256": "a" * 64}], "swarm": {}}
    [model] = local_facts(tmp_path, node)["models"]
    assert model["name"] == "gone" and "not installed" in model["problems"][0]


def test_without_a_node_every_installed_model_is_checked(tmp_path: Path) -> None:
    install_fake_model(tmp_path, "one")
    install_fake_model(tmp_path, "two")
    assert [m["name"] for m in local_facts(tmp_path, None)["models"]] == ["one", "two"]


def test_doctor_without_a_node_prints_the_problem_and_exits_10(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "node.json").write_text(json.dumps({"api": "127.0.0.1:9"}))  # nobody there
    assert main(["doctor", "--home", str(tmp_path), "--json"]) == EXIT_PROBLEMS
    report = json.loads(capsys.readouterr().out)
    assert [f["check"] for f in report["findings"]] == ["node_unreachable"]
    assert report["ok"] is False and report["exit_status"] == EXIT_PROBLEMS
    assert main(["doctor", "--home", str(tmp_path)]) == EXIT_PROBLEMS
    text = capsys.readouterr().out
    assert "PROBLEM  node_unreachable" in text and "fix: start it" in text


def test_render_says_nothing_to_fix_for_a_healthy_node() -> None:
    node = {"peer_id": "12D3KooWSelf", "swarm": {"mode": "private"},
            "peers": [{"peer_id": "p", "alive": True}]}
    text = _render(node, {"home": "/h", "models": [{}, {}]}, [])
    assert text.splitlines()[0] == "node 12D3KooWSelf, 1 of 1 peers alive; swarm: private"
    assert text.splitlines()[1].startswith("addresses: none; 0 peer(s) dialled in")
    assert "2 model(s)" in text and text.splitlines()[-1] == "nothing to fix"


def test_doctor_and_bench_take_the_api_options() -> None:
    args = build_parser().parse_args(["bench", "--api", "127.0.0.1:1", "--seconds", "3"])
    assert (args.api, args.seconds) == ("127.0.0.1:1", 3.0)
    assert build_parser().parse_args(["doctor", "--token", "t"]).token == "t"


def peer_row(peer_id: str, *, me: bool = False, alive: bool = True,
             embed: tuple[str, ...] = (), generate: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"peer_id": peer_id, "self": me, "alive": alive,
            "capabilities": {"embed": [{"name": m} for m in embed],
                             "generate": [{"name": m} for m in generate]}}


def test_bench_plans_models_everywhere_and_links_to_live_peers_only() -> None:
    rows = [peer_row("me", me=True, embed=("e",), generate=("g",)),
            peer_row("b", embed=("e",)), peer_row("dead", alive=False, generate=("g",))]
    assert [(p["what"], p["peer_id"], p["model"]) for p in plan(rows)] == [
        ("embed", "me", "e"), ("generate", "me", "g"),
        ("embed", "b", "e"), ("rtt", "b", None), ("echo", "b", None)]


def test_bench_table_rows() -> None:
    peer = "12D3KooWAbcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
    results = [
        {"what": "embed", "peer_id": peer, "model": "m", "self": True, "count": 3,
         "batch": 32, "texts_per_s": 412.34, "batch_ms": {"median": 77.7}},
        {"what": "generate", "peer_id": peer, "model": "g", "self": False, "count": 2,
         "tokens": 32, "tokens_per_s": 20.5, "job_ms": {"median": 780}},
        {"what": "rtt", "peer_id": peer, "model": None, "self": False, "count": 9,
         "rtt_ms": {"min": 0.4, "median": 0.61, "max": 2.0}},
        {"what": "echo", "peer_id": peer, "model": None, "self": False, "count": 4,
         "mib_per_s": 88.12, "rtt_ms": {"median": 22.7}},
        {"what": "echo", "peer_id": peer, "model": None, "self": False,
         "error": "DEADLINE_EXCEEDED: echo did not answer"},
    ]
    cells = [bench_cells(r) for r in results]
    assert cells[0][:4] == ("self", "embed", "m", "412.3 texts/s")
    assert cells[1][0] == "12D3KooW..ABCDEFGH" and cells[1][3] == "20.5 tok/s"
    assert cells[2][3] == "0.61 ms" and cells[3][3] == "88.1 MiB/s"
    assert cells[4][3:] == ("failed", "DEADLINE_EXCEEDED: echo did not answer")
    out = io.StringIO()
    print_table(COLUMNS, cells, file=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["PEER", "WHAT", "MODEL", "FIGURE", "DETAIL"]
    assert len(lines) == 6


def test_ping_reply_view() -> None:
    assert PingReply.from_wire({"pong": True, "time_ms": NOW_MS}).time_ms == NOW_MS
    for bad in ([], {"pong": True}, {"pong": 1, "time_ms": NOW_MS},
                {"pong": True, "time_ms": True}, {"pong": True, "time_ms": 1 << 63},
                {"pong": True, "time_ms": -5}, {"pong": True, "time_ms": float(NOW_MS)},
                {"pong": True, "time_ms": NOW_MS, "more": 1}):
        with pytest.raises(RemoteProtocolError):
            PingReply.from_wire(bad)


def test_echo_reply_view() -> None:
    assert EchoReply.from_wire({"payload": "abc"}, sent="xyz").payload == "abc"
    assert EchoReply.from_wire({"payload": b"\x00"}).payload == b"\x00"
    for bad, sent in (({"payload": "ab"}, "abc"), ({"payload": b"abc"}, "abc"),
                      ({"payload": 3}, None), ({}, None), ({"payload": "a", "x": 1}, None)):
        with pytest.raises(RemoteProtocolError):
            EchoReply.from_wire(bad, sent=sent)


def test_handshake_failures_are_counted_and_their_sources_capped() -> None:
    rejections = Rejections()
    now = [100.0]
    failures = HandshakeFailures(rejections, max_sources=3, clock=lambda: now[0])
    assert failures.snapshot() == {"failed": 0, "sources": {}, "last_s_ago": None}
    for i in range(10):
        failures.note(f"10.0.0.{i}", RuntimeError("noise handshake failed"))
    failures.note("10.0.0.8", RuntimeError("again"))
    failures.note(None, RuntimeError("no address"))
    now[0] = 130.0
    snapshot = failures.snapshot()
    assert snapshot["last_s_ago"] == 30.0
    assert snapshot["failed"] == 12 == rejections.counts["bad_handshake"]
    assert list(snapshot["sources"]) == ["10.0.0.9", "10.0.0.8", "unknown"]  # latest last
    assert snapshot["sources"]["10.0.0.8"] == 2
