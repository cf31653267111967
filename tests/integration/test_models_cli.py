"""``calinode models`` on a real home, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_harness import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_add_verify_remove(prepared_models: Path, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    source = prepared_models / "minilm-l6"
    run_cli("models", "--home", home, "add", str(source), "--name", "my-minilm", "--dim", "384")
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
    run_cli("models", "--home", home, "remove", "my-minilm")
    proc = run_cli("models", "--home", home, "remove", "my-minilm", check=False)
    assert proc.returncode == 1 and "UNKNOWN_MODEL" in proc.stderr


def test_add_gguf_and_refuse_nonsense(prepared_models: Path, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    gguf = next((prepared_models / "smollm2-135m").glob("*.gguf"))
    run_cli("models", "--home", home, "add", str(gguf), "--name", "tiny-chat",
            "--context-length", "2048")
    listed = json.loads(run_cli("models", "--home", home, "list", "--json").stdout)
    assert listed[0]["kind"] == "generate" and listed[0]["context_length"] == 2048
    proc = run_cli("models", "--home", home, "add", str(tmp_path), "--name", "x", check=False)
    assert proc.returncode == 1 and "model.onnx" in proc.stderr
    proc = run_cli("models", "--home", home, "prepare", "not-a-default", check=False)
    assert proc.returncode == 1 and "not an embedded default" in proc.stderr
