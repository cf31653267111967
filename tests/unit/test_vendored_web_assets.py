"""The onnxruntime-web files the dashboard serves are the ones its lockfile pins, complete and
licensed: the vendored copies (node/dashboard/static/vendor, made by node/dashboard/web/
build.mjs) are committed, so nothing checks them at install time but this."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "node" / "dashboard" / "web"
VENDOR = ROOT / "node" / "dashboard" / "static" / "vendor" / "onnxruntime-web"


def test_the_vendored_onnxruntime_web_is_the_pinned_version_with_its_license() -> None:
    pinned = json.loads((WEB / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    lock = json.loads((WEB / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == pinned
    assert lock["packages"][""]["dependencies"]["onnxruntime-web"] == pinned
    assert (VENDOR / "VERSION").read_text().strip() == pinned
    header = (VENDOR / "ort.wasm.min.mjs").read_text(encoding="utf-8")[:200]
    assert f"ONNX Runtime Web v{pinned}" in header and "MIT License" in header
    license_text = (VENDOR / "LICENSE").read_text()
    assert "MIT License" in license_text and "Microsoft Corporation" in license_text
    wasm = (VENDOR / "ort-wasm-simd-threaded.wasm").read_bytes()
    assert wasm[:4] == b"\0asm" and len(wasm) > 1_000_000
    glue = (VENDOR / "ort-wasm-simd-threaded.mjs").read_text(encoding="utf-8")
    assert "import.meta.url" in glue  # the .wasm is found next to it, on the node's own URLs


def test_embed_js_loads_onnxruntime_from_the_node_never_a_cdn() -> None:
    embed = (ROOT / "node" / "dashboard" / "static" / "embed.js").read_text(encoding="utf-8")
    assert 'new URL("./vendor/onnxruntime-web/", import.meta.url)' in embed
    assert "wasmPaths = VENDOR" in embed
    for cdn in ("cdn.", "unpkg", "jsdelivr", "https://"):
        assert cdn not in embed
