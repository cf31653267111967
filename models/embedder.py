"""ONNX Runtime embedder: texts in, one float32 vector per text out.

:class:`OnnxEmbedder` runs a BERT-family encoder exported to ONNX (``last_hidden_state``
output) with its Hugging Face ``tokenizer.json``, as described by a :class:`ModelManifest`:

1. the manifest's query or passage prefix is put in front of every text (``raw``: none);
2. texts are tokenized, cut to ``manifest.max_tokens`` and never padded to a fixed length;
3. inputs are bucketed by token count: sorted, run in batches of at most ``max_batch`` that are
   padded only to their own longest input, then put back in the caller's order;
4. token states are pooled (mean over the attention mask, or the CLS token), L2-normalized
   when the manifest says so, and optionally cut to their first ``dimensions`` components
   (Matryoshka-style), normalized again.

Blocking compute: the daemon calls :meth:`OnnxEmbedder.embed` through ``trio.to_thread``.
An embedder holds no per-call state, so concurrent calls from several threads are safe
(ONNX Runtime sessions allow concurrent ``run``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from calinode.models.manifest import ModelManifest
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

InputType = Literal["query", "passage", "raw"]
TOKENIZER_FILE = "tokenizer.json"
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INTEGER_TYPES: dict[str, type[np.integer[Any]]] = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32,
}


@dataclass
class EmbedResult:
    """The vectors of one :meth:`OnnxEmbedder.embed` call, in the order of its texts."""

    vectors: np.ndarray  # (n, dim) float32
    token_counts: list[int]  # tokens the model saw per text, special tokens included
    truncated: list[int]  # indexes of the texts that were cut to max_tokens


class OnnxEmbedder:
    """A loaded embedding model; see the module docstring for what :meth:`embed` does."""

    def __init__(
        self,
        manifest: ModelManifest,
        model_dir: Path,
        *,
        threads: int | None = None,
        max_batch: int = 32,
    ) -> None:
        if manifest.kind != "embed" or manifest.dim is None:
            raise ConfigError(f"model {manifest.name} is not an embedding model")
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, not {max_batch}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be at least 1, not {threads}")
        self.manifest = manifest
        self.dim: int = manifest.dim
        # A dynamically quantized graph gives batch-dependent vectors, so it runs one text a
        # call; those single-row calls run side by side on ``threads`` workers with one ONNX
        # Runtime thread each, which is faster than batching on a small CPU (measured: 520 vs
        # 400 sentences/s on 2 cores). Sessions are safe for concurrent ``run`` calls.
        self.max_batch = max_batch if manifest.batch_invariant else 1
        self._workers = 1 if manifest.batch_invariant else (threads or os.cpu_count() or 1)
        self._pool = (ThreadPoolExecutor(self._workers, thread_name_prefix="embed")
                      if self._workers > 1 else None)
        tokenizer_path = model_dir / manifest.file(TOKENIZER_FILE).path
        self._tokenizer, self._pad_id = load_tokenizer(tokenizer_path, manifest.max_tokens)
        self._splitter = Tokenizer.from_file(str(tokenizer_path))  # whole texts, for chunking
        self._splitter.no_padding()
        self._splitter.no_truncation()
        self._session = open_session(model_dir / manifest.primary.path,
                                     threads if self._pool is None else 1)
        self._inputs = _graph_inputs(self._session, manifest.name)
        self._output = _token_states_output(self._session, manifest.name)

    def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "passage",
        dimensions: int | None = None,
    ) -> EmbedResult:
        """Embed ``texts`` (blocking); bad input raises ``JobError(BAD_REQUEST)``."""
        prefix = self._prefix(input_type)
        _check_texts(texts)
        keep = self._check_dimensions(dimensions)
        encodings = self._tokenizer.encode_batch([prefix + text for text in texts])
        token_counts = [len(encoding.ids) for encoding in encodings]
        vectors = np.empty((len(encodings), self.dim), dtype=np.float32)
        batches = list(bucket_by_length(token_counts, self.max_batch))
        if self._pool is not None and len(batches) > 1:
            outputs = self._pool.map(
                lambda batch: self._run_batch([encodings[i] for i in batch]), batches)
            for batch, output in zip(batches, outputs, strict=True):
                vectors[batch] = output
        else:
            for batch in batches:
                vectors[batch] = self._run_batch([encodings[i] for i in batch])
        return EmbedResult(
            vectors=self._finish(vectors, keep),
            token_counts=token_counts,
            truncated=[i for i, encoding in enumerate(encodings) if encoding.overflowing],
        )

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of every token of each whole text (no special tokens, no
        truncation): what ``node.chunking.chunk_text`` cuts documents with."""
        _check_texts(texts)
        encodings = self._splitter.encode_batch(list(texts), add_special_tokens=False)
        return [[(int(a), int(b)) for a, b in encoding.offsets] for encoding in encodings]

    @property
    def chunk_budget(self) -> int:
        """Tokens a chunk may hold so that, with the prefix and special tokens, it fits."""
        prefix = len(self._splitter.encode(self.manifest.passage_prefix,
                                           add_special_tokens=False).ids)
        return self.manifest.max_tokens - prefix - 4  # [CLS], [SEP], re-tokenization slack

    def _prefix(self, input_type: str) -> str:
        if input_type == "query":
            return self.manifest.query_prefix
        if input_type == "passage":
            return self.manifest.passage_prefix
        if input_type == "raw":
            return ""
        choices = ", ".join(get_args(InputType))
        raise JobError(f"input_type must be one of {choices}, not {input_type!r}",
                       code=ErrorCode.BAD_REQUEST)

    def _check_dimensions(self, dimensions: int | None) -> int:
        if dimensions is None:
            return self.dim
        if (isinstance(dimensions, bool) or not isinstance(dimensions, int | np.integer)
                or not 1 <= dimensions <= self.dim):
            raise JobError(f"dimensions must be an integer from 1 to {self.dim} for model "
                           f"{self.manifest.name}, not {dimensions!r}",
                           code=ErrorCode.BAD_REQUEST)
        return int(dimensions)

    def _run_batch(self, encodings: list[Encoding]) -> np.ndarray:
        """Pad a batch to its longest input, run the graph and pool the token states."""
        arrays = pad_batch(encodings, self._pad_id)
        feed = {name: arrays[name].astype(dtype, copy=False)
                for name, dtype in self._inputs.items()}
        (states,) = self._session.run([self._output], feed)
        return pool(np.asarray(states, dtype=np.float32), arrays["attention_mask"],
                    self.manifest.pooling or "mean")

    def _finish(self, vectors: np.ndarray, keep: int) -> np.ndarray:
        if self.manifest.normalize:
            vectors = l2_normalize(vectors)
        if keep < self.dim:
            vectors = np.ascontiguousarray(vectors[:, :keep])
            if self.manifest.normalize:
                vectors = l2_normalize(vectors)
        return vectors


def load_tokenizer(path: Path, max_tokens: int) -> tuple[Tokenizer, int]:
    """A ``tokenizer.json`` set to cut at ``max_tokens`` (special tokens included) and never
    pad: whatever the file says about truncation and padding is overridden. Also returns the
    id to pad batches with (the file's padding id, else its pad token, else 0)."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises bare Exceptions for unreadable files
        raise ConfigError(f"cannot load tokenizer {path}: {exc}") from exc
    pad_id = (tokenizer.padding or {}).get("pad_id")
    if pad_id is None:
        pad_id = tokenizer.token_to_id("[PAD]") or tokenizer.token_to_id("<pad>") or 0
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer, int(pad_id)


def open_session(path: Path, threads: int | None) -> ort.InferenceSession:
    """A CPU ONNX Runtime session with all graph optimizations on."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime picks (physical cores)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own non-public exception types
        raise ConfigError(f"cannot load ONNX model {path}: {exc}") from exc


def _graph_inputs(
    session: ort.InferenceSession, name: str
) -> dict[str, type[np.integer[Any]]]:
    """The inputs the graph declares, among those we can feed, with their integer dtype."""
    declared = {item.name: item.type for item in session.get_inputs()}
    unknown = sorted(set(declared) - set(_MODEL_INPUTS))
    if unknown or "input_ids" not in declared:
        raise ConfigError(f"model {name}: expected inputs among {', '.join(_MODEL_INPUTS)} "
                          f"with input_ids, got {', '.join(sorted(declared))}")
    inputs = {}
    for input_name, onnx_type in declared.items():
        if onnx_type not in _INTEGER_TYPES:
            raise ConfigError(f"model {name}: input {input_name} has type {onnx_type}")
        inputs[input_name] = _INTEGER_TYPES[onnx_type]
    return inputs


def _token_states_output(session: ort.InferenceSession, name: str) -> str:
    """The output holding per-token states: ``last_hidden_state``, else the first output."""
    outputs = session.get_outputs()
    chosen = next((o for o in outputs if o.name == "last_hidden_state"), outputs[0])
    if len(chosen.shape) != 3:
        raise ConfigError(f"model {name}: output {chosen.name} is not (batch, tokens, dim)")
    return str(chosen.name)


def pad_batch(encodings: Sequence[Encoding], pad_id: int) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64) of a batch, padded on
    the right to its longest input."""
    width = max(len(encoding.ids) for encoding in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        count = len(encoding.ids)
        ids[row, :count] = encoding.ids
        mask[row, :count] = 1
        types[row, :count] = encoding.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def bucket_by_length(token_counts: Sequence[int], max_batch: int) -> Iterator[list[int]]:
    """Indexes of the inputs, sorted by token count, in batches of at most ``max_batch``."""
    order = sorted(range(len(token_counts)), key=token_counts.__getitem__)
    for start in range(0, len(order), max_batch):
        yield order[start:start + max_batch]


def pool(states: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """(batch, tokens, dim) token states to (batch, dim): CLS token or masked mean."""
    if pooling == "cls":
        return np.ascontiguousarray(states[:, 0, :])
    weights = mask.astype(np.float32)[:, :, None]
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled: np.ndarray = (states * weights).sum(axis=1) / counts
    return pooled


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        raise JobError("texts must be a list of strings", code=ErrorCode.BAD_REQUEST)
    if not texts:
        raise JobError("texts is empty: give at least one text", code=ErrorCode.BAD_REQUEST)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise JobError(f"texts[{index}] is a {type(text).__name__}, not a string",
                           code=ErrorCode.BAD_REQUEST)
        if not text.strip():
            raise JobError(f"texts[{index}] is empty or only whitespace",
                           code=ErrorCode.BAD_REQUEST)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a JSON "\ud800"
            raise JobError(f"texts[{index}] is not valid Unicode: {exc.reason}",
                           code=ErrorCode.BAD_REQUEST) from None
