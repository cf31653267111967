"""The wheel holds every module: build it, install it into a fresh venv, import them all.

A subpackage missing from ``[tool.setuptools] packages`` only breaks the wheel, never an
editable install, so this is the test that catches it. The fresh venv borrows the test venv's
third-party packages through a ``.pth`` line (installing them again from the pip cache took
about a minute and tests nothing of ours); calinode itself comes from the wheel alone, since
the editable install's finder lives in a ``.pth`` file that a borrowed folder does not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"node": "calinode.node", "protocol": "calinode.protocol", "models": "calinode.models"}


def source_modules() -> list[str]:
    modules = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join((package, *parts)))
    return modules


def build_wheel(dist: Path) -> Path:
    """calinode's wheel, built by deploy/wheel.sh (the builder of deploy/install.sh, hence of
    the Dockerfile and of CI's fresh-install check) with this venv's setuptools."""
    env = os.environ | {"PYTHON": sys.executable, "WHEEL_NO_BUILD_ISOLATION": "1"}
    out = subprocess.run([str(ROOT / "deploy" / "wheel.sh"), str(ROOT), str(dist)], env=env,
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return Path(out.strip())


def test_wheel_installs_and_imports_every_module(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    env_dir = tmp_path / "venv"
    # no pip of its own (ensurepip took 6-28 s, most of this test): the pip below is the test
    # venv's, borrowed with the other packages; it installs into the venv it runs in
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True,
                          check=True).stdout.strip()
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "borrowed-deps.pth").write_text("".join(p + "\n" for p in borrowed))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=900)
    where = subprocess.run([str(python), "-c", "import calinode.node as n; print(n.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(site), where  # the wheel's copy, not the editable source tree
    modules = source_modules()
    assert "calinode.protocol.messages" in modules and "calinode.node.cli.main" in modules
    # every folder with an __init__.py is a package of the wheel, and every listed one exists
    packages = {".".join((package, *init.parent.relative_to(ROOT / folder).parts))
                for folder, package in PACKAGES.items()
                for init in (ROOT / folder).rglob("__init__.py")}
    with (ROOT / "pyproject.toml").open("rb") as fh:
        assert set(tomllib.load(fh)["tool"]["setuptools"]["packages"]) == packages
    script = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    subprocess.run([str(python), "-c", script, *modules], check=True, timeout=120,
                   cwd=tmp_path)
    proc = subprocess.run([str(env_dir / "bin" / "calinode"), "--help"], capture_output=True,
                          text=True, check=True, timeout=60, cwd=tmp_path)
    assert "start" in proc.stdout and "peers" in proc.stdout
    proc = subprocess.run([str(python), "-m", "calinode.node.cli", "--help"],
                          capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path)
    assert "start" in proc.stdout and "peers" in proc.stdout
