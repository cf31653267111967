"""Session fixtures for the GGUF tests: both real models prepared once into a temporary
registry, and one loaded generator per model (2 threads), shared by every test module.

Import a fixture into a test module by its function name (``from gguf_fixtures import
smollm2_fixture``); tests ask for it by its fixture name (``smollm2``). Each importing module
registers its own copy of a fixture, so the work is cached here, once per test session, rather
than by pytest's fixture scope.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from calinode.models.generator import GgufGenerator
from calinode.models.prepare.gguf import prepare_gemma3, prepare_smollm2
from calinode.models.registry import ModelRegistry

THREADS = 2
_cache: dict[str, object] = {}


def prepared_gguf_registry(factory: pytest.TempPathFactory) -> ModelRegistry:
    """A registry holding ``smollm2-135m`` and ``gemma3-270m``, prepared once per session."""
    registry = _cache.get("registry")
    if not isinstance(registry, ModelRegistry):
        registry = ModelRegistry(Path(factory.mktemp("gguf-models")))
        prepare_smollm2(registry)
        prepare_gemma3(registry)
        _cache["registry"] = registry
    return registry


def loaded_generator(factory: pytest.TempPathFactory, name: str) -> GgufGenerator:
    generator = _cache.get(name)
    if not isinstance(generator, GgufGenerator):
        registry = prepared_gguf_registry(factory)
        manifest = registry.get(name)
        generator = GgufGenerator(manifest, registry.path_of(manifest), threads=THREADS)
        _cache[name] = generator
    return generator


@pytest.fixture(scope="session", name="gguf_registry")
def gguf_registry_fixture(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    return prepared_gguf_registry(tmp_path_factory)


@pytest.fixture(scope="session", name="smollm2")
def smollm2_fixture(tmp_path_factory: pytest.TempPathFactory) -> GgufGenerator:
    """SmolLM2-135M-Instruct: a chat model."""
    return loaded_generator(tmp_path_factory, "smollm2-135m")


@pytest.fixture(scope="session", name="gemma3")
def gemma3_fixture(tmp_path_factory: pytest.TempPathFactory) -> GgufGenerator:
    """Gemma 3 270M: a base model (completion prompts)."""
    return loaded_generator(tmp_path_factory, "gemma3-270m")
