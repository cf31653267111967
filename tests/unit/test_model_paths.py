"""Model manifests name files inside the model's folder, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from calinode.models.manifest import ModelFile, ModelManifest, model_path_is_inside
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError

SHA = "a" * 64


@pytest.mark.parametrize("path", ["model.onnx", "onnx/model.onnx", "a.b/c_d-e.gguf"])
def test_paths_inside_the_folder(path: str) -> None:
    assert model_path_is_inside(path)
    ModelFile(path=path, sha256=SHA, size=1)


@pytest.mark.parametrize("path", [
    "../../x", "../x", "/etc/passwd", "a/../../x", "./x", "a//b", "", ".", "..", "a\\..\\x",
    "x\x00", "a/./b", "onnx/..", 5])
def test_paths_that_leave_the_folder_are_refused(path: object) -> None:
    assert not model_path_is_inside(path)
    with pytest.raises((ConfigError, TypeError)):
        ModelFile(path=path, sha256=SHA, size=1)  # type: ignore[arg-type]


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    folder = registry.folder("m")
    folder.mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (folder / "model.gguf").symlink_to(tmp_path / "secret")
    manifest = ModelManifest(name="m", kind="generate", context_length=8,
                             files=(ModelFile(path="model.gguf", sha256=SHA, size=1),))
    with pytest.raises(ConfigError, match="outside"):
        registry.path_of(manifest)
