"""Checks a model must pass before ``calinode models add`` installs it.

A node loads its models at start; a file that is not the model it claims to be (random bytes
named ``model.onnx``, a text file named ``.gguf``, a download cut short) used to install
without a word and then kill the node at its next start with a long traceback. These checks
run the file the way the node will, on the exact bytes being installed (the registry calls
them on its staging copy, before the atomic rename, so a refused model leaves nothing behind):

- an ONNX embedder must load in ONNX Runtime with its ``tokenizer.json``, take the inputs the
  node feeds, and turn a probe text into finite vectors of the declared dimension;
- a GGUF file must have a well-formed header (:func:`read_gguf_header`, a bounded reader of
  our own: magic, version, metadata, tensor table), name its architecture, carry a vocabulary,
  hold tensors, have a chat template when installed as a chat model, and load in llama.cpp
  (vocabulary only, which also checks that every tensor lies within the file).

Every refusal is one :class:`~calinode.protocol.errors.BadRequest` line (``BAD_REQUEST``):
what is wrong with which file, then what to do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from calinode.models.manifest import ModelManifest
from calinode.protocol.errors import BadRequest, CalinodeError

#: The text every embedder check embeds.
PROBE_TEXT = "calinode checks that this model embeds a sentence."
GGUF_MAGIC = b"GGUF"
#: GGUF versions llama.cpp reads (version 1 is no longer supported by it).
GGUF_VERSIONS = (2, 3)
#: Bounds of the header reader, far above any real model, so a hostile or corrupt header
#: cannot make it allocate or loop without limit (lengths are also checked against the file).
MAX_GGUF_METADATA = 1 << 16
MAX_GGUF_TENSORS = 1 << 20
MAX_GGUF_KEY = 1 << 16
MAX_GGUF_STRING = 1 << 24
MAX_GGUF_ARRAY = 1 << 24
MAX_GGUF_DIMS = 4
MAX_DETAIL = 300

# GGUF metadata value types: struct format of the fixed-size ones, and the two others.
_GGUF_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
               10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _one_line(text: str) -> str:
    """A library's message as one bounded line (ONNX Runtime's span several)."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= MAX_DETAIL else line[:MAX_DETAIL - 3] + "..."


def refused(path: Path, what: str, why: str, fix: str) -> BadRequest:
    """The one-line refusal: ``<file>: not a usable <what> (<why>); <fix>``."""
    return BadRequest(f"{path}: not a usable {what} ({_one_line(why)}); {fix}; "
                      "nothing was installed")


# -- GGUF ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GgufArray:
    """A metadata array, described but not kept (a vocabulary holds ~50k-260k strings)."""

    item_type: int
    count: int


@dataclass(frozen=True)
class GgufHeader:
    """What :func:`read_gguf_header` read: scalars and strings as values, arrays described."""

    version: int
    tensor_count: int
    metadata: dict[str, object] = field(default_factory=dict)
    data_offset: int = 0  # where the tensor table ends (before alignment padding)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) and value else None


class GgufFormatError(ValueError):
    """The bytes are not a well-formed GGUF header (the message says where)."""


class _Reader:
    """Little-endian reads that never go past the file's end or a bound."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        if count > self.size - self.pos:
            raise GgufFormatError(f"truncated: {what} at byte {self.pos} needs {count} bytes, "
                                  f"the file has {self.size - self.pos} left")
        data = self.fh.read(count)
        if len(data) != count:
            raise GgufFormatError(f"truncated while reading {what} at byte {self.pos}")
        self.pos += count
        return data

    def skip(self, count: int, what: str) -> None:
        if count > self.size - self.pos:
            raise GgufFormatError(f"truncated: {what} at byte {self.pos} needs {count} bytes, "
                                  f"the file has {self.size - self.pos} left")
        self.fh.seek(count, io.SEEK_CUR)
        self.pos += count

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack("<Q", self.take(8, what))[0]
        return value

    def count(self, what: str, limit: int) -> int:
        value = self.u64(what)
        if value > limit:
            raise GgufFormatError(f"{what} is {value}, over the limit of {limit}")
        return value

    def string(self, what: str, limit: int = MAX_GGUF_STRING) -> str:
        raw = self.take(self.count(f"length of {what}", limit), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GgufFormatError(f"{what} at byte {self.pos - len(raw)} is not UTF-8") from None

    def skip_string(self, what: str) -> None:
        self.skip(self.count(f"length of {what}", MAX_GGUF_STRING), what)

    def value(self, value_type: int, what: str) -> object:
        if value_type in _GGUF_FIXED:
            fmt = _GGUF_FIXED[value_type]
            value: object = struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]
            return value
        if value_type == _GGUF_STRING:
            return self.string(what)
        if value_type == _GGUF_ARRAY:
            item_type = self.u32(f"item type of {what}")
            count = self.count(f"length of {what}", MAX_GGUF_ARRAY)
            if item_type in _GGUF_FIXED:
                self.skip(count * struct.calcsize(_GGUF_FIXED[item_type]), what)
            elif item_type == _GGUF_STRING:
                for index in range(count):
                    self.skip_string(f"{what}[{index}]")
            else:  # arrays of arrays: llama.cpp writes none
                raise GgufFormatError(f"{what}: unsupported array item type {item_type}")
            return GgufArray(item_type=item_type, count=count)
        raise GgufFormatError(f"{what}: unknown value type {value_type}")


def read_gguf_header(fh: BinaryIO, size: int) -> GgufHeader:
    """Parse a GGUF header from ``fh`` (at its start; ``size``: the file's length).

    Reads the magic, the version, every metadata pair and the tensor table, bounded by the
    limits above and by the file's length; raises :class:`GgufFormatError` naming the first
    thing that is wrong. Array values are skipped, not kept."""
    reader = _Reader(fh, size)
    magic = reader.take(4, "magic")
    if magic != GGUF_MAGIC:
        raise GgufFormatError(f"no GGUF magic: the file starts with {magic!r}")
    version = reader.u32("version")
    if version not in GGUF_VERSIONS:
        raise GgufFormatError(f"GGUF version {version}; llama.cpp reads versions "
                              f"{', '.join(map(str, GGUF_VERSIONS))}")
    tensor_count = reader.count("tensor count", MAX_GGUF_TENSORS)
    metadata_count = reader.count("metadata count", MAX_GGUF_METADATA)
    metadata: dict[str, object] = {}
    for index in range(metadata_count):
        key = reader.string(f"metadata key {index}", MAX_GGUF_KEY)
        value_type = reader.u32(f"type of {key!r}")
        metadata[key] = reader.value(value_type, f"value of {key!r}")
    for index in range(tensor_count):
        name = reader.string(f"name of tensor {index}", MAX_GGUF_KEY)
        dims = reader.u32(f"dimension count of tensor {name!r}")
        if not 1 <= dims <= MAX_GGUF_DIMS:
            raise GgufFormatError(f"tensor {name!r} has {dims} dimensions")
        reader.skip(8 * dims + 4 + 8, f"shape, type and offset of tensor {name!r}")
    return GgufHeader(version=version, tensor_count=tensor_count, metadata=metadata,
                      data_offset=reader.pos)


def generation_problems(header: GgufHeader, manifest: ModelManifest) -> list[str]:
    """What keeps a parsed GGUF from serving as ``manifest`` says (empty: nothing). Pure."""
    problems = []
    if header.architecture is None:
        problems.append("no general.architecture in its metadata")
    if not isinstance(header.metadata.get("tokenizer.ggml.model"), str):
        problems.append("no tokenizer (tokenizer.ggml.model) in its metadata")
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if not (isinstance(tokens, GgufArray) and tokens.item_type == _GGUF_STRING
            and tokens.count > 0):
        problems.append("no vocabulary (tokenizer.ggml.tokens) in its metadata")
    if header.tensor_count == 0:
        problems.append("no tensors: a vocabulary-only file cannot generate")
    template = header.metadata.get("tokenizer.chat_template")
    if manifest.chat and manifest.chat_format is None and not (
            isinstance(template, str) and template.strip()):
        problems.append("no chat template in the file")
    return problems


def _gguf_fix(problems: list[str]) -> str:
    if problems == ["no chat template in the file"]:
        return ("add it as a base model with --base (completion prompts only), or name a "
                "chat format with --chat-format (e.g. chatml, gemma, llama-3)")
    return "give a complete GGUF file (llama.cpp's format), e.g. download it again"


def check_gguf_generator(manifest: ModelManifest, path: Path) -> None:
    """Refuse ``path`` unless it serves as the generation model ``manifest`` describes."""
    from calinode.models.generator import CHAT_FORMATTERS

    what = "GGUF model"
    if manifest.chat_format is not None and manifest.chat_format not in CHAT_FORMATTERS:
        raise BadRequest(f"unknown --chat-format {manifest.chat_format!r}; known: "
                         f"{', '.join(sorted(CHAT_FORMATTERS))}; nothing was installed")
    try:
        with path.open("rb") as fh:
            header = read_gguf_header(fh, path.stat().st_size)
    except GgufFormatError as exc:
        raise refused(path, what, str(exc), _gguf_fix([])) from None
    problems = generation_problems(header, manifest)
    if problems:
        raise refused(path, what, "; ".join(problems), _gguf_fix(problems))
    error = llama_load_error(path)
    if error is not None:
        raise refused(path, what, f"llama.cpp cannot load it: {error}", _gguf_fix([]))


@contextlib.contextmanager
def _llama_log_captured() -> Iterator[io.StringIO]:
    """llama.cpp's log (printed to ``sys.stderr`` by llama-cpp-python's log callback when the
    ``llama-cpp-python`` logger's level allows) caught into a buffer instead. The level is
    DEBUG because llama-cpp-python maps llama.cpp's error level to DEBUG (measured with
    llama-cpp-python 0.3.36: "error loading model" arrives as level 4)."""
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.DEBUG)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        log.setLevel(level)


def llama_load_error(path: Path) -> str | None:
    """Load ``path`` in llama.cpp, vocabulary only (fast: no weights are read, but every
    tensor's bounds are checked); None when it loads, else llama.cpp's reason."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with _llama_log_captured() as log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if model:
        llama_cpp.llama_model_free(model)
        return None
    lines = [line.strip() for line in log.getvalue().splitlines() if line.strip()]
    reasons = [line.split("error loading model:", 1)[1].strip() for line in lines
               if "error loading model:" in line]
    return (reasons or lines or ["it refused the file"])[0]


# -- ONNX ---------------------------------------------------------------------------------------


def check_onnx_embedder(manifest: ModelManifest, folder: Path) -> None:
    """Refuse the model in ``folder`` unless it embeds :data:`PROBE_TEXT` into finite vectors
    of ``manifest.dim`` components, loaded as the node loads it."""
    from calinode.models.embedder import (
        TOKENIZER_FILE,
        _graph_inputs,
        _token_states_output,
        load_tokenizer,
        open_session,
        pad_batch,
        pool,
    )

    model_path = folder / manifest.primary.path
    what = "ONNX embedding model"
    try:
        tokenizer, pad_id = load_tokenizer(folder / manifest.file(TOKENIZER_FILE).path,
                                           manifest.max_tokens)
    except CalinodeError as exc:
        raise refused(folder / TOKENIZER_FILE, "tokenizer", exc.message,
                      "give the tokenizer.json that belongs to the model") from None
    try:
        session = open_session(model_path, 1)
        inputs = _graph_inputs(session, manifest.name)
        output = _token_states_output(session, manifest.name)
    except CalinodeError as exc:
        detail = exc.message.replace(f"cannot load ONNX model {model_path}: ", "ONNX Runtime: ")
        raise refused(model_path, what, detail,
                      "give a BERT-family encoder exported to ONNX (calinode models export "
                      "makes one from a checkpoint)") from None
    arrays = pad_batch([tokenizer.encode(manifest.passage_prefix + PROBE_TEXT)], pad_id)
    feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in inputs.items()}
    try:
        (states,) = session.run([output], feed)
    except Exception as exc:  # onnxruntime raises its own non-public exception types
        raise refused(model_path, what, f"running it on a probe text failed: {exc}",
                      "give a model that takes token ids and returns token states") from None
    states = np.asarray(states)
    if states.ndim != 3 or states.shape[:2] != arrays["input_ids"].shape:
        raise refused(model_path, what,
                      f"on a probe text it returned shape {tuple(states.shape)}, not "
                      "(batch, tokens, dim)", "give an encoder whose output is token states")
    got = int(states.shape[2])
    if got != manifest.dim:
        raise refused(model_path, what,
                      f"it gives {got}-dimensional vectors, not the declared {manifest.dim}",
                      f"give --dim {got}")
    vector = pool(states.astype(np.float32), arrays["attention_mask"],
                  manifest.pooling or "mean")
    if not np.all(np.isfinite(vector)):
        raise refused(model_path, what, "it gives NaN or infinite values on a probe text",
                      "give a working export of the model")


def check_model(manifest: ModelManifest, folder: Path) -> None:
    """The check for ``manifest``'s kind, on the model's files in ``folder`` (the registry's
    staging copy); a refusal names the files where the user has them (``manifest.source``:
    the folder or the GGUF file given to ``models add``)."""
    try:
        if manifest.kind == "embed":
            check_onnx_embedder(manifest, folder)
        else:
            check_gguf_generator(manifest, folder / manifest.primary.path)
    except BadRequest as exc:
        if not manifest.source:
            raise
        source = Path(manifest.source)
        shown = source if manifest.kind == "embed" else source.parent
        raise BadRequest(exc.message.replace(str(folder), str(shown))) from None
