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
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calinode.models.manifest import NAME_PATTERN, ModelFile, ModelManifest, Pooling
from calinode.models.prepare.checkpoint import (
    CheckpointInfo,
    read_checkpoint,
)
from calinode.models.prepare.sample_texts import SAMPLE_TEXTS
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

Progress = Callable[[str], None]
Batch = dict[str, npt.NDArray[np.int64]]

OPSET = 17
FP32_MIN_COSINE = 0.999
INT8_MIN_COSINE = 0.95
_BATCH = 16
_OUTPUT = "last_hidden_state"
_AXES = {0: "batch", 1: "sequence"}



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




def _quiet(_: str) -> None:
    return None












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

    class LastHiddenState(torch.nn.Module):  # type: ignore[misc]  # torch is Any to mypy
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
