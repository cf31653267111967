"""Model manifests: what a model is, byte for byte, and how to run it.

A manifest is a small JSON file next to the model's files in
``$CALINODE_HOME/models/<name>/manifest.json``. Its ``sha256`` (of the primary file) is what
capability records advertise, so peers route a job only to a byte-identical model, and what a
collection pins. Pure data and validation: no I/O but :func:`sha256_file`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from calinode.protocol.errors import ConfigError

ModelKind = Literal["embed", "generate"]
Pooling = Literal["mean", "cls"]
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MANIFEST_FILE = "manifest.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_path_is_inside(path: object) -> bool:
    """``path`` names a file inside a model's folder: relative, no ``..``, no empty part, no
    backslash or NUL (a manifest is read from disk and may have been tampered with)."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and all(part not in ("", ".", "..") for part in
                                          path.split("/"))


@dataclass(frozen=True, kw_only=True)
class ModelFile:
    """One file of a model, relative to the model's folder."""

    path: str
    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not model_path_is_inside(self.path):
            raise ConfigError(f"model file path may not leave the model folder: {self.path!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ConfigError(f"bad sha256 for {self.path!r}")


@dataclass(frozen=True, kw_only=True)
class ModelManifest:
    """Everything needed to load, run, route to and pin a model.

    Embedding models (``kind="embed"``): ``files[0]`` is the ONNX graph, a ``tokenizer.json``
    is among the files; ``dim``, ``pooling``, ``normalize``, the query/passage prefixes (E5:
    ``"query: "``/``"passage: "``) and ``max_tokens`` describe the output.
    Generation models (``kind="generate"``): ``files[0]`` is the GGUF file; ``context_length``,
    ``chat_format`` (None: the chat template inside the GGUF; "gemma" etc.: llama-cpp-python's
    named formats) and ``chat`` (False for base models: completion prompts only).
    """

    name: str
    kind: ModelKind
    files: tuple[ModelFile, ...]
    dim: int | None = None
    pooling: Pooling | None = None
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    max_tokens: int = 256
    context_length: int | None = None
    chat_format: str | None = None
    chat: bool = True
    stop: tuple[str, ...] = ()
    license: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"model name {self.name!r}: use lowercase letters, digits, . _ -")
        if self.kind not in ("embed", "generate"):
            raise ConfigError(f"model kind must be embed or generate, not {self.kind!r}")
        if not self.files:
            raise ConfigError(f"model {self.name} lists no files")
        if self.kind == "embed":
            if not self.dim or self.dim <= 0 or self.pooling not in ("mean", "cls"):
                raise ConfigError(f"embedding model {self.name} needs dim > 0 and pooling")
        elif not self.context_length or self.context_length <= 0:
            raise ConfigError(f"generation model {self.name} needs context_length > 0")
        if self.max_tokens <= 0:
            raise ConfigError("max_tokens must be positive")

    @property
    def sha256(self) -> str:
        """The identity of the model: the sha256 of its primary file."""
        return self.files[0].sha256

    @property
    def primary(self) -> ModelFile:
        return self.files[0]

    @property
    def batch_invariant(self) -> bool:
        """Whether a text's vector is independent of the other texts in its batch.

        Not for dynamically quantized graphs: their activation scales are computed over the
        whole padded batch, so the same text moves (cosine down to ~0.96) with its batch mates.
        Such models are run one text per call, so vectors are reproducible.
        """
        quantization = self.extra.get("quantization")
        return not (isinstance(quantization, dict) and quantization.get("mode") == "dynamic")

    def file(self, name: str) -> ModelFile:
        for item in self.files:
            if item.path == name or item.path.endswith("/" + name):
                return item
        raise ConfigError(f"model {self.name} has no file {name!r}")

    def advertised(self) -> dict[str, Any]:
        """What a capability record says about this model."""
        info: dict[str, Any] = {"name": self.name, "kind": self.kind, "sha256": self.sha256}
        if self.kind == "embed":
            info.update(dim=self.dim, pooling=self.pooling, normalize=self.normalize,
                        query_prefix=self.query_prefix, passage_prefix=self.passage_prefix,
                        max_tokens=self.max_tokens)
        else:
            info.update(context_length=self.context_length, chat=self.chat)
        return info

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["stop"] = list(self.stop)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        try:
            data = json.loads(text)
            data["files"] = tuple(ModelFile(**f) for f in data["files"])
            data["stop"] = tuple(data.get("stop", ()))
            return cls(**data)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"unreadable model manifest: {exc}") from exc
