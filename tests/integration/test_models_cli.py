"""``calinode models`` on a real home, through the real CLI (and a real daemon where a model in
use must not be removed)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from calinode.models.prepare.checks import read_gguf_header
from daemon_harness import Swarm, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_add_verify_remove(prepared_models: Path, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    source = prepared_models / "minilm-l6"
    proc = run_cli("models", "--home", home, "add", str(source), "--name", "my-minilm",
                   "--dim", "384")
    assert "my-minilm: serve it: calinode start --embed-model my-minilm" in proc.stderr
    listed = json.loads(run_cli("models", "--home", home, "list", "--json").stdout)
    assert [m["name"] for m in listed] == ["my-minilm"] and listed[0]["dim"] == 384
    original = json.loads((source / "manifest.json").read_text())
    assert listed[0]["sha256"] == original["files"][0]["sha256"]  # same bytes, same id
    assert json.loads(run_cli("models", "--home", home, "verify", "--json").stdout) == {
        "my-minilm": []}
    model = tmp_path / "home" / "models" / "my-minilm" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_cli("models", "--home", home, "verify", check=False)
    assert proc.returncode == 1 and "sha256 mismatch" in proc.stdout
    run_cli("models", "--home", home, "remove", "my-minilm")  # nothing uses it
    proc = run_cli("models", "--home", home, "remove", "my-minilm", check=False)
    assert proc.returncode == 4 and "UNKNOWN_MODEL" in proc.stderr


def test_add_gguf_and_refuse_nonsense(prepared_models: Path, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    gguf = next((prepared_models / "smollm2-135m").glob("*.gguf"))
    proc = run_cli("models", "--home", home, "add", str(gguf), "--name", "tiny-chat",
                   "--context-length", "2048")
    assert "tiny-chat: serve it: calinode start --gen-model tiny-chat" in proc.stderr
    listed = json.loads(run_cli("models", "--home", home, "list", "--json").stdout)
    assert listed[0]["kind"] == "generate" and listed[0]["context_length"] == 2048
    proc = run_cli("models", "--home", home, "add", str(tmp_path), "--name", "x", check=False)
    assert proc.returncode == 8 and "model.onnx" in proc.stderr
    proc = run_cli("models", "--home", home, "prepare", "not-a-default", check=False)
    assert proc.returncode == 8 and "not an embedded default" in proc.stderr


def _broken_models(prepared_models: Path, root: Path) -> dict[str, tuple[list[str], str]]:
    """``models add`` arguments of broken models, with the reason each must be refused for."""
    tokenizer = prepared_models / "minilm-l6-int8" / "tokenizer.json"
    onnx = (prepared_models / "minilm-l6-int8" / "model.onnx").read_bytes()
    cases: dict[str, tuple[list[str], str]] = {}
    for name, data in (("random", os.urandom(200_000)), ("truncated", onnx[: len(onnx) // 2])):
        folder = root / name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(data)
        shutil.copyfile(tokenizer, folder / "tokenizer.json")
        cases[name] = ([str(folder), "--dim", "384"],
                       rf"{folder}/model.onnx: not a usable ONNX embedding model \(ONNX Runtime")
    cases["wrong-dim"] = ([str(prepared_models / "minilm-l6-int8"), "--dim", "768"],
                          "it gives 384-dimensional vectors, not the declared 768.*--dim 384")
    text = root / "notes.gguf"
    text.write_text("# my notes\nnot a model at all\n")
    cases["text-gguf"] = ([str(text)], r"notes.gguf: not a usable GGUF model \(no GGUF magic")
    gguf = next((prepared_models / "smollm2-135m").glob("*.gguf"))
    with gguf.open("rb") as fh:
        end = read_gguf_header(fh, gguf.stat().st_size).data_offset
        fh.seek(0)
        head = fh.read(end + 65536)
    cut = root / "cut.gguf"
    cut.write_bytes(head)
    cases["truncated-gguf"] = ([str(cut)], "llama.cpp cannot load it: .*not within the file")
    cut_header = root / "cut-header.gguf"
    cut_header.write_bytes(head[: end // 2])
    cases["truncated-header"] = ([str(cut_header)], r"GGUF model \(truncated: ")
    return cases


def test_broken_models_are_refused_with_one_line(prepared_models: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    sources = tmp_path / "sources"
    sources.mkdir()
    for case, (args, why) in _broken_models(prepared_models, sources).items():
        proc = run_cli("models", "--home", str(home), "add", *args, "--name", "broken",
                       check=False)
        errors = [line for line in proc.stderr.splitlines() if not line.startswith("  ")]
        assert proc.returncode == 2, (case, proc.stderr)
        assert "Traceback" not in proc.stderr, (case, proc.stderr)
        assert len(errors) == 1 and errors[0].startswith("calinode: error: BAD_REQUEST: "), (
            case, proc.stderr)
        assert re.search(why, errors[0]), (case, errors[0])
        assert errors[0].endswith("nothing was installed"), (case, errors[0])
        assert os.listdir(home / "models") == [], case  # no model, no staging folder
        assert json.loads(run_cli("models", "--home", str(home), "list", "--json").stdout) == []


def test_a_model_in_use_is_not_removed(prepared_models: Path, swarm: Swarm) -> None:
    node = swarm.daemon("n1", models=prepared_models)
    node.home.mkdir(parents=True)
    # the node's own copy (hard links): removing from it leaves the session's models alone
    shutil.copytree(prepared_models, node.home / "models", copy_function=os.link)
    node.start("--index", "--threads", "1")
    home = str(node.home)
    run_cli("collections", "create", "docs", "--shards", "2", "--replicas", "1", "--home", home)

    proc = run_cli("models", "--home", home, "remove", "minilm-l6-int8", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("calinode: error: BAD_REQUEST: model minilm-l6-int8 is in "
                                  "use: collection docs pins minilm-l6-int8"), proc.stderr
    assert "the node running on this home" in proc.stderr and "--force" in proc.stderr
    proc = run_cli("models", "--home", home, "remove", "smollm2-135m", check=False)
    assert proc.returncode == 2 and "serves smollm2-135m" in proc.stderr, proc.stderr
    assert {"minilm-l6-int8", "smollm2-135m"} <= set(os.listdir(node.home / "models"))

    # a model installed here that the node does not serve: how to serve it
    proc = run_cli("models", "--home", home, "prepare", "minilm-l6")
    assert ("the running node does not serve minilm-l6" in proc.stderr
            and "calinode start --embed-model minilm-l6" in proc.stderr), proc.stderr
    proc = run_cli("models", "--home", home, "prepare", "minilm-l6-int8")
    assert "serve it" not in proc.stderr, proc.stderr  # the node serves it
    # a model no peer serves: the error says how to serve it
    proc = run_cli("generate", "hello", "--completion", "--model", "gemma3-270m",
                   "--home", home, check=False)
    assert proc.returncode == 4 and "UNKNOWN_MODEL" in proc.stderr, proc.stderr
    assert ("serve it: calinode models prepare gemma3-270m, then calinode start --gen-model "
            "gemma3-270m") in proc.stderr

    proc = run_cli("models", "--home", home, "remove", "minilm-l6-int8", "--force")
    assert "calinode: warning: collection docs pins minilm-l6-int8" in proc.stderr
    assert "serves minilm-l6-int8" in proc.stderr and "removed minilm-l6-int8" in proc.stdout
    assert "minilm-l6-int8" not in os.listdir(node.home / "models")
    assert (prepared_models / "minilm-l6-int8" / "manifest.json").is_file()
    assert json.loads(run_cli("status", "--home", home, "--json").stdout)["peer_id"] == (
        node.peer_id)  # the running node is alive and answering

    assert node.stop() == 0
    run_cli("models", "--home", home, "remove", "smollm2-135m")  # no node serves it now
    assert "smollm2-135m" not in os.listdir(node.home / "models")
