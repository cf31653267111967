"""One-time export of a Hugging Face BERT-family checkpoint (E5, BGE, MiniLM...) to ONNX.

``export_checkpoint(folder, name, registry)`` reads a sentence-transformers folder (or a plain
transformers one), exports its transformer with the legacy TorchScript exporter of torch.onnx
(opset 17, dynamic batch and sequence axes, output ``last_hidden_state``), optionally makes a
per-channel dynamic INT8 copy, and **verifies** each graph against the torch model on sample
texts (same token ids, same pooling and normalization) before anything is registered:

- fp32: every text's cosine to the torch embedding must be >= ``FP32_MIN_COSINE`` (0.999);
- int8: >= ``INT8_MIN_COSINE`` (0.95).

Below that nothing is installed and :class:`~calinode.protocol.errors.JobError` says by how
much. The models are registered as ``name`` and ``name-int8`` (``model.onnx`` primary, then
``tokenizer.json``). Pooling, normalization and ``max_tokens`` come from the folder
(``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``); a plain
transformers folder gets mean pooling, L2 normalization. E5 checkpoints get the ``query: ``/
``passage: `` prefixes unless told otherwise.

torch and transformers come from the optional ``export`` extra and are imported inside the
functions here: the daemon never imports torch. Blocking and slow (tens of seconds): a CLI step,
never a job handler.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calinode.models.manifest import NAME_PATTERN, ModelFile, ModelManifest, Pooling
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

Progress = Callable[[str], None]
Batch = dict[str, npt.NDArray[np.int64]]

OPSET = 17
FP32_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.95
E5_QUERY_PREFIX = "query: "
E5_PASSAGE_PREFIX = "passage: "
_BATCH = 16
_OUTPUT = "last_hidden_state"
_AXES = {0: "batch", 1: "sequence"}
# model types whose position ids count from pad_token_id + 1 (514 positions hold 512 tokens)
_PADDING_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text"})

# Varied on purpose: one word to several hundred tokens (past any max_tokens, so truncation is
# checked), punctuation, numbers, code, non-Latin scripts; batches of 16 mix lengths (padding).
SAMPLE_TEXTS: tuple[str, ...] = (
    "Hello!",
    "ok",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Peer-to-peer networks let every node act as both a client and a server.",
    "Retrieval-augmented generation combines a search index with a language model.",
    "FAISS performs efficient similarity search over dense vectors.",
    "ONNX Runtime runs the exported graph on CPU without PyTorch.",
    "The invoice #4471 totals $1,299.95, due on 2024-03-31.",
    "pi = 3.14159265358979, e = 2.71828182845904, sqrt(2) = 1.41421356",
    "Call +1 (555) 010-9999 ext. 42 before 17:30 UTC.",
    "Version 2.13.0 fixed 1024 bugs in 365 days; 99.9% uptime!",
    "!!! ??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "SELECT id, name FROM users WHERE age > 30 ORDER BY name;",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "https://example.org/path?query=1&lang=en#section-2",
    "user@example.com wrote: 'see you at 9am'",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca más cercana, por favor?",
    "Questo ristorante serve la migliore pizza napoletana della città.",
    "O rato roeu a roupa do rei de Roma.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "北京是中华人民共和国的首都。",
    "서울은 대한민국의 수도입니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "עברית נכתבת מימין לשמאל.",
    "हिन्दी भारत की राजभाषाओं में से एक है।",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",  # noqa: RUF001  (Greek on purpose)
    "Emoji test: 🚀🔥✨ launch day 🎉",
    "naïve café résumé coöperate façade jalapeño",
    "A",
    "   leading and trailing spaces   ",
    "UPPERCASE SHOUTING TEXT ABOUT DISTRIBUTED SYSTEMS",
    "Water boils at 100 °C (212 °F) at sea level.",
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "Machine learning models can be quantized to 8-bit integers to run faster.",
    "A replica that misses heartbeats for ten seconds is considered dead.",
    "Shards are placed on peers with rendezvous hashing to limit data movement.",
    "Please summarize the attached quarterly report in three bullet points.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
    "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "Vector databases store embeddings and answer nearest-neighbour queries; approximate "
    "indexes such as HNSW or IVF trade a little recall for a lot of speed, while exact flat "
    "indexes compare the query with every stored vector and are the reference for recall.",
    "Transformers process all tokens of a sequence in parallel using self-attention, which "
    "lets each token attend to every other token; the cost grows quadratically with the length "
    "of the sequence, which is why encoders cap their input at a few hundred tokens.",
    " ".join(["Distributed systems must tolerate partial failures, slow networks and clocks "
              "that disagree, so every request carries a deadline and every write a quorum."]
             * 12),
    " ".join(f"item {i}: {i * i}" for i in range(200)),
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.",
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women "
    "ages 19 to 70 is 46 grams per day.",
    "Tabs\tand\nnewlines\r\nmixed in",
    "1 2 3 4 5 6 7 8 9 10",
)


@dataclass(frozen=True, kw_only=True)
class Verification:
    """How closely one ONNX graph reproduces the torch embeddings (cosine per sample text)."""

    precision: str
    texts: int
    min_cosine: float
    mean_cosine: float
    threshold: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "min_cosine": self.min_cosine,
                "mean_cosine": self.mean_cosine, "threshold": self.threshold}


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What :func:`export_checkpoint` installed, and how well each graph matched torch."""

    fp32: ModelManifest
    fp32_check: Verification
    int8: ModelManifest | None = None
    int8_check: Verification | None = None

    @property
    def manifests(self) -> tuple[ModelManifest, ...]:
        return (self.fp32,) if self.int8 is None else (self.fp32, self.int8)


@dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """What a checkpoint folder says about its embeddings (read without torch)."""

    transformer_dir: Path
    tokenizer_json: Path
    pooling: Pooling
    normalize: bool
    max_tokens: int
    query_prefix: str
    passage_prefix: str
    license: str


def _quiet(_: str) -> None:
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


def _pooling_of(config: dict[str, Any], path: Path) -> Pooling:
    mode = config.get("pooling_mode")
    if mode is None:  # the legacy form: one pooling_mode_* flag per mode
        mode = [key.removeprefix("pooling_mode_") for key, on in config.items()
                if key.startswith("pooling_mode_") and on is True]
    modes = [mode] if isinstance(mode, str) else list(mode)
    modes = ["mean" if m == "mean_tokens" else "cls" if m == "cls_token" else m for m in modes]
    if config.get("include_prompt", True) is False:
        raise ConfigError(f"{path}: pooling that excludes the prompt is not supported")
    if modes == ["mean"] or modes == ["cls"]:
        return "mean" if modes == ["mean"] else "cls"
    raise ConfigError(f"{path}: pooling {modes} is not supported (only mean or cls)")


def _is_e5(folder: Path) -> bool:
    # A hub cache snapshot is .../models--intfloat--e5-small-v2/snapshots/<hash>: look up too.
    names = [folder.name, *(p.name for p in folder.parents if p.name.startswith("models--"))]
    return any(re.search(r"(?:^|[^a-z0-9])e5(?:$|[^0-9])", n.lower()) for n in names)


def _license_of(folder: Path) -> str:
    readme = folder / "README.md"
    if not readme.is_file():
        return ""
    text = readme.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.DOTALL)
    found = re.search(r"^license:\s*(\S+)\s*$", front.group(1), re.M) if front else None
    return found.group(1) if found else ""


def read_checkpoint(
    folder: Path, *, query_prefix: str | None = None, passage_prefix: str | None = None
) -> CheckpointInfo:
    """Read pooling, normalization, length limit and prefixes from a checkpoint folder."""
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise ConfigError(f"{folder} is not a Hugging Face checkpoint (no config.json)")
    transformer_dir, normalize = folder, True
    pooling: Pooling = "mean"
    prompts: dict[str, Any] = {}
    if (folder / "modules.json").is_file():
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            kinds = {str(m["type"]).rsplit(".", 1)[-1]: m for m in modules}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"unreadable {folder / 'modules.json'}: {exc!r}") from exc
        unsupported = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
        if unsupported or "Transformer" not in kinds:
            raise ConfigError(f"{folder}: sentence-transformers modules {unsupported or ['?']} "
                              "are not supported (only Transformer, Pooling, Normalize)")
        transformer_dir = folder / kinds["Transformer"].get("path", "")
        if "Pooling" in kinds:
            pooling_config = folder / kinds["Pooling"]["path"] / "config.json"
            pooling = _pooling_of(_read_json(pooling_config), pooling_config)
        normalize = "Normalize" in kinds
        if (folder / "config_sentence_transformers.json").is_file():
            prompts = _read_json(folder / "config_sentence_transformers.json").get("prompts") or {}
    tokenizer_json = next((d / "tokenizer.json" for d in (transformer_dir, folder)
                           if (d / "tokenizer.json").is_file()), None)
    if tokenizer_json is None:
        raise ConfigError(f"{folder} has no tokenizer.json (a fast tokenizer file): calinode "
                          "runs the tokenizer without transformers, so the checkpoint needs one; "
                          "save it with AutoTokenizer.from_pretrained(...).save_pretrained(...)")
    config = _read_json(transformer_dir / "config.json")
    limit = int(config.get("max_position_embeddings") or 512)
    if config.get("model_type") in _PADDING_OFFSET_POSITIONS:  # positions start after pad id
        limit -= int(config.get("pad_token_id", 1)) + 1
    max_tokens = None
    for candidate in (transformer_dir, folder):
        st_config = candidate / "sentence_bert_config.json"
        if st_config.is_file() and _read_json(st_config).get("max_seq_length"):
            max_tokens = int(_read_json(st_config)["max_seq_length"])
            break
    if max_tokens is None and (transformer_dir / "tokenizer_config.json").is_file():
        length = _read_json(transformer_dir / "tokenizer_config.json").get("model_max_length")
        max_tokens = int(length) if isinstance(length, int | float) and length < 100_000 else None
    max_tokens = min(max_tokens or 512, limit)
    # given > the checkpoint's own prompts > E5's convention > none
    e5 = _is_e5(folder)
    if query_prefix is None:
        query_prefix = str(prompts.get("query", E5_QUERY_PREFIX if e5 else ""))
    if passage_prefix is None:
        passage_prefix = str(prompts.get("passage", prompts.get(
            "document", E5_PASSAGE_PREFIX if e5 else "")))
    return CheckpointInfo(transformer_dir=transformer_dir, tokenizer_json=tokenizer_json,
                          pooling=pooling, normalize=normalize, max_tokens=max_tokens,
                          query_prefix=query_prefix, passage_prefix=passage_prefix,
                          license=_license_of(folder))


def _tokenize(tokenizer_json: Path, texts: Sequence[str], max_tokens: int) -> list[Batch]:
    """Batches of int64 ``input_ids``/``attention_mask``/``token_type_ids``, padded per batch
    and truncated at ``max_tokens`` (set explicitly: a tokenizer.json may pad to a fixed length
    or truncate shorter than the model does)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    padding = tokenizer.padding
    if padding is None:
        pad_token = next((t for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None),
                         "[PAD]")
        padding = {"pad_id": tokenizer.token_to_id(pad_token) or 0, "pad_token": pad_token}
    tokenizer.enable_padding(pad_id=int(padding["pad_id"]), pad_token=str(padding["pad_token"]),
                             pad_type_id=int(padding.get("pad_type_id", 0)))
    tokenizer.enable_truncation(max_length=max_tokens)
    batches = []
    for start in range(0, len(texts), _BATCH):
        encodings = tokenizer.encode_batch(list(texts[start:start + _BATCH]))
        batches.append({
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        })
    return batches


def _pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64], pooling: Pooling,
         normalize: bool) -> npt.NDArray[np.float64]:
    """Sentence embeddings from token embeddings ``(batch, seq, dim)`` and the attention mask."""
    states = hidden.astype(np.float64)
    if pooling == "cls":
        out = states[:, 0]
    else:
        weights = mask.astype(np.float64)[:, :, None]
        out = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    if normalize:
        out = out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
    return out


def _torch_embeddings(model: Any, batches: Sequence[Batch], inputs: Sequence[str],
                      pooling: Pooling, normalize: bool) -> npt.NDArray[np.float64]:
    import torch

    out = []
    with torch.inference_mode():
        for batch in batches:
            feed = {k: torch.from_numpy(batch[k]) for k in inputs}
            hidden = model(**feed).last_hidden_state
            mask = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if pooling == "cls":
                emb = hidden[:, 0]
            else:
                emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if normalize:
                emb = torch.nn.functional.normalize(emb, p=2.0, dim=1)
            out.append(emb.double().numpy())
    return np.concatenate(out)


def _onnx_embeddings(model_path: Path, batches: Sequence[Batch], *, pooling: Pooling,
                     normalize: bool) -> npt.NDArray[np.float64]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for batch in batches:
        (hidden,) = session.run([_OUTPUT], {k: batch[k] for k in names})
        out.append(_pool(np.asarray(hidden), batch["attention_mask"], pooling, normalize))
    return np.concatenate(out)


def _verify(precision: str, reference: npt.NDArray[np.float64],
            candidate: npt.NDArray[np.float64], threshold: float) -> Verification:
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosines = (reference * candidate).sum(axis=1) / np.clip(norms, 1e-12, None)
    return Verification(precision=precision, texts=len(cosines),
                        min_cosine=float(cosines.min()), mean_cosine=float(cosines.mean()),
                        threshold=threshold)


@contextlib.contextmanager
def _silenced_export_warnings() -> Iterator[None]:
    """Silence exactly the warnings that loading and tracing a BERT-family model emit; the
    numeric verification, not a warning, decides whether the traced graph is right."""
    import torch

    jit: Any = torch.jit  # TracerWarning is not in torch.jit.__all__
    with warnings.catch_warnings():
        # torch.onnx: we choose the legacy exporter on purpose (dynamo=False)
        warnings.filterwarnings("ignore", r"You are using the legacy TorchScript-based ONNX",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", r"The feature will be removed\. Please remove usage",
                                DeprecationWarning)
        # tracing bakes Python-side shape checks in; verification runs other shapes
        warnings.filterwarnings("ignore", category=jit.TracerWarning)
        # position/token-type slicing uses non-negative indices only
        warnings.filterwarnings("ignore", r"Exporting aten::index operator of advanced indexing",
                                UserWarning)
        yield


def _load_model(info: CheckpointInfo) -> Any:
    import torch
    import transformers

    hf_logging: Any = importlib.import_module("transformers.utils.logging")  # untyped
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = transformers.AutoModel.from_pretrained(
            str(info.transformer_dir), dtype=torch.float32, local_files_only=True,
            attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load {info.transformer_dir} with transformers: {exc}") from exc
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return model.eval()


def _export_onnx(model: Any, inputs: Sequence[str], sample: Batch, target: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(**dict(zip(inputs, args, strict=True))).last_hidden_state
            return out

    wrapper = LastHiddenState(model).eval()  # a fresh Module trains: it would turn dropout on
    with torch.no_grad():
        torch.onnx.export(
            wrapper, tuple(torch.from_numpy(sample[k]) for k in inputs), str(target),
            input_names=list(inputs), output_names=[_OUTPUT], opset_version=OPSET,
            dynamic_axes={k: _AXES for k in (*inputs, _OUTPUT)}, dynamo=False)
    extra = sorted(p.name for p in target.parent.iterdir() if p != target)
    if extra:
        raise ConfigError(f"the export wrote external weight files {extra}: models over 2 GB "
                          "are not supported")


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Please consider to run pre-processing")


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs a hint for CNNs (shape pre-processing) on the root logger; for these
    # graphs it changes nothing measurable, so the hint is dropped
    root = logging.getLogger()
    root.addFilter(_drop_preprocessing_hint)
    try:
        quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(_drop_preprocessing_hint)


@dataclass(frozen=True, kw_only=True)
class _Graphs:
    """The verified graphs of one export, waiting in a temporary folder to be installed."""

    paths: list[Path]
    checks: list[Verification]
    dim: int
    exported_with: dict[str, Any]


def _export_and_verify(info: CheckpointInfo, texts: Sequence[str], tmp: Path, *, int8: bool,
                       progress: Progress) -> _Graphs:
    import torch
    import transformers

    batches = _tokenize(info.tokenizer_json, texts, info.max_tokens)
    model = _load_model(info)
    accepts = inspect.signature(model.forward).parameters
    inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepts]
    fp32_path = tmp / "fp32" / "model.onnx"
    fp32_path.parent.mkdir()
    try:
        progress(f"computing the torch reference on {len(texts)} texts")
        reference = _torch_embeddings(model, batches, inputs, info.pooling, info.normalize)
        progress(f"exporting to ONNX (opset {OPSET}, inputs {', '.join(inputs)})")
        _export_onnx(model, inputs, {k: v[:2] for k, v in batches[0].items()}, fp32_path)
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        raise JobError(f"cannot export {info.transformer_dir} ({type(model).__name__}): "
                       f"{type(exc).__name__}: {exc}", code=ErrorCode.INTERNAL) from exc
    progress("verifying the fp32 graph against torch")
    paths = [fp32_path]
    checks = [_verify("fp32", reference, _onnx_embeddings(
        fp32_path, batches, pooling=info.pooling, normalize=info.normalize), FP32_MIN_COSINE)]
    if int8:
        progress("quantizing to INT8 (dynamic, per channel)")
        paths.append(tmp / "int8" / "model.onnx")
        paths[1].parent.mkdir()
        _quantize_int8(fp32_path, paths[1])
        progress("verifying the INT8 graph against torch")
        checks.append(_verify("int8", reference, _onnx_embeddings(
            paths[1], batches, pooling=info.pooling, normalize=info.normalize), INT8_MIN_COSINE))
    for check in checks:
        progress(f"{check.precision}: cosine to torch min {check.min_cosine:.6f}, "
                 f"mean {check.mean_cosine:.6f} (needs >= {check.threshold})")
    return _Graphs(paths=paths, checks=checks, dim=int(reference.shape[1]),
                   exported_with={"opset": OPSET, "inputs": inputs, "torch": torch.__version__,
                                  "transformers": transformers.__version__})


def export_checkpoint(
    checkpoint_dir: Path,
    name: str,
    registry: ModelRegistry,
    *,
    int8: bool = False,
    progress: Progress = _quiet,
    sample_texts: Sequence[str] | None = None,
    query_prefix: str | None = None,
    passage_prefix: str | None = None,
) -> ExportReport:
    """Export, verify and register ``name`` (fp32) and, with ``int8``, ``name-int8``.

    ``sample_texts`` (default :data:`SAMPLE_TEXTS`) are embedded with the passage prefix by
    torch and by each graph. Raises :class:`ConfigError` for an unusable folder or a taken
    name, and :class:`JobError` when a graph disagrees with torch (or cannot be exported);
    nothing is registered then: both models or none.
    """
    checkpoint_dir = Path(checkpoint_dir)
    names = [name, f"{name}-int8"] if int8 else [name]
    for item in names:
        if not NAME_PATTERN.match(item):
            raise ConfigError(f"model name {item!r}: use lowercase letters, digits, . _ -")
        if item in registry:
            raise ConfigError(f"model {item} is already installed; "
                              f"remove it first: calinode models remove {item}")
    progress(f"reading {checkpoint_dir}")
    info = read_checkpoint(checkpoint_dir, query_prefix=query_prefix,
                           passage_prefix=passage_prefix)
    texts = [info.passage_prefix + t for t in (sample_texts or SAMPLE_TEXTS)]
    progress(f"pooling {info.pooling}, normalize {info.normalize}, "
             f"max_tokens {info.max_tokens}; loading the torch model")
    with _silenced_export_warnings(), tempfile.TemporaryDirectory(prefix="calinode-export-") as tmp:
        graphs = _export_and_verify(info, texts, Path(tmp), int8=int8, progress=progress)
        failed = [c for c in graphs.checks if not c.passed]
        if failed:
            raise JobError("refusing to register " + ", ".join(names) + ": " + "; ".join(
                f"{c.precision} ONNX embeddings differ from torch (min cosine "
                f"{c.min_cosine:.6f}, mean {c.mean_cosine:.6f}, needs >= {c.threshold})"
                for c in failed), code=ErrorCode.INTERNAL)
        placeholder = (ModelFile(path="model.onnx", sha256="0" * 64, size=0),)
        installed: list[ModelManifest] = []
        for item, path, check in zip(names, graphs.paths, graphs.checks, strict=True):
            extra: dict[str, Any] = {"export": graphs.exported_with,
                                     "verification": check.as_dict()}
            if check.precision == "int8":
                extra["quantization"] = {"mode": "dynamic", "per_channel": True,
                                         "weight_type": "QInt8", "from": name}
            manifest = ModelManifest(
                name=item, kind="embed", files=placeholder, dim=graphs.dim, pooling=info.pooling,
                normalize=info.normalize, query_prefix=info.query_prefix,
                passage_prefix=info.passage_prefix, max_tokens=info.max_tokens,
                license=info.license, source=f"ONNX export of {checkpoint_dir}", extra=extra)
            progress(f"installing {item}")
            try:
                installed.append(registry.install(
                    manifest, [(path, "model.onnx"), (info.tokenizer_json, "tokenizer.json")],
                    progress=progress))
            except BaseException:
                for done in installed:  # both or none
                    registry.remove(done.name)
                raise
    progress("done: " + ", ".join(m.name for m in installed))
    return ExportReport(fp32=installed[0], fp32_check=graphs.checks[0],
                        int8=installed[1] if int8 else None,
                        int8_check=graphs.checks[1] if int8 else None)
