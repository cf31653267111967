"""The models installed on this node: ``$CALINODE_HOME/models/<name>/``.

Each model folder holds its files and ``manifest.json``. Adding copies the files in (so a
model's bytes cannot change under the node), hashes them and writes the manifest last, via a
temporary folder and an atomic rename: a half-added model is never listed. Blocking file I/O:
call from a worker thread inside the daemon.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from calinode.models.manifest import MANIFEST_FILE, ModelFile, ModelManifest, sha256_file
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

Progress = Callable[[str], None]
#: Called with the final manifest and the staging folder before a model becomes visible;
#: raising refuses the model (e.g. :func:`calinode.models.prepare.checks.check_model`).
Check = Callable[[ModelManifest, Path], None]


def _quiet(_: str) -> None:
    return None


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_FILE).is_file())

    def manifests(self) -> list[ModelManifest]:
        return [self.get(name) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.folder(name) / MANIFEST_FILE).is_file()

    def get(self, name: str) -> ModelManifest:
        path = self.folder(name) / MANIFEST_FILE
        try:
            return ModelManifest.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            known = ", ".join(self.names()) or "none"
            raise JobError(f"model {name!r} is not installed here (installed: {known}); "
                           "see: calinode models list", code=ErrorCode.UNKNOWN_MODEL) from None

    def path_of(self, manifest: ModelManifest, file: ModelFile | None = None) -> Path:
        """The file's path, resolved, and refused if it leads out of the model's folder
        (through a symlink, say)."""
        folder = self.folder(manifest.name)
        path = (folder / (file or manifest.primary).path).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise ConfigError(f"model {manifest.name}: {path} is outside its folder {folder}")
        return path

    def install(
        self,
        manifest: ModelManifest,
        sources: Iterable[tuple[Path, str]],
        *,
        replace_existing: bool = False,
        progress: Progress = _quiet,
        check: Check | None = None,
    ) -> ModelManifest:
        """Copy ``(source path, name in the model folder)`` pairs in, hash them, and write the
        manifest with the real hashes. ``manifest.files`` is replaced by what was copied; the
        first source is the primary file. ``check`` runs on the copied bytes before the model
        is renamed into place: when it raises, nothing is installed."""
        target = self.folder(manifest.name)
        if target.exists() and not replace_existing:
            raise ConfigError(f"model {manifest.name} is already installed; "
                              f"remove it first: calinode models remove {manifest.name}")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{manifest.name}-", dir=self.root))
        try:
            files = []
            for source, name in sources:
                progress(f"copying {name}")
                dest = staging / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
                progress(f"hashing {name}")
                files.append(ModelFile(path=name, sha256=sha256_file(dest),
                                       size=dest.stat().st_size))
            final = replace(manifest, files=tuple(files))
            if check is not None:
                progress("checking that the model loads and runs")
                check(final, staging)
            (staging / MANIFEST_FILE).write_text(final.to_json(), encoding="utf-8")
            for item in staging.rglob("*"):
                if item.is_file():
                    with item.open("rb") as fh:
                        os.fsync(fh.fileno())
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
            return final
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def remove(self, name: str) -> None:
        self.get(name)  # raises UNKNOWN_MODEL
        shutil.rmtree(self.folder(name))

    def verify(self, name: str) -> list[str]:
        """Re-hash every file; return the problems found (empty: the model is intact)."""
        manifest = self.get(name)
        problems = []
        for item in manifest.files:
            path = self.folder(name) / item.path
            if not path.is_file():
                problems.append(f"{item.path}: missing")
            elif path.stat().st_size != item.size:
                problems.append(f"{item.path}: size {path.stat().st_size} != {item.size}")
            elif sha256_file(path) != item.sha256:
                problems.append(f"{item.path}: sha256 mismatch")
        return problems
