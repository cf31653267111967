"""Imports point one way (issue 11): ``cli`` -> ``client`` (HTTP only); ``api`` ->
``rag``/``inference``/``index`` -> ``jobs`` -> ``p2p`` -> ``protocol``; ``models`` never
imports ``node``; ``protocol`` imports neither.

Every module of ``node/``, ``models/`` and ``protocol/`` is parsed (not imported) and *every*
import in it counts: module level, inside a function, under ``if TYPE_CHECKING:``. An import
hidden in a function still ties the two modules together, and a type-only import still makes
one layer know the inside of another; neither may dodge the rule.

Layers, lowest first, and what each may import (besides itself):

- ``protocol``: nothing of calinode.
- ``models``: ``protocol`` (model backends and the shard store; never the node).
- ``core``: the node's foundations at the top of ``node/`` (config, identity, files of the
  home, rejections, clocks): ``protocol``, ``models``.
- ``p2p`` (``node/p2p/``): ``core``.
- ``jobs`` (``node/jobs/``): ``p2p``.
- ``index``: ``jobs`` (the replicas this node hosts and the pure logic of the sharded index).
- ``inference`` (``node/inference/``): ``jobs``, and ``index`` for its pure chunking (the
  ``embed_chunks`` job cuts documents); ``index`` never imports ``inference``.
- ``rag`` (the coordinator): ``index``, ``inference``.
- ``blobs`` (``node/blobs/``, model transfers between peers): ``jobs``.
- ``api`` (``node/api/``): ``rag``, ``blobs``.
- ``daemon``: everything but the command line: it is the composition root that builds the
  node (the API included).
- ``client`` (``node/client.py``, the HTTP client of the local API): ``core``.
- ``cli`` (``node/cli/``): ``client``; ``daemon`` (``calinode start`` runs the node in this
  process); ``models`` (``calinode models`` works on a home's files, no node); ``core``. Never
  a layer of the running node (p2p, jobs, index, inference, rag, api).

Every allowance includes what the allowed layer may import (``api`` may import ``p2p``),
except the command line's allowance of ``daemon`` (``ALSO``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"node": "calinode.node", "models": "calinode.models",
            "protocol": "calinode.protocol"}

#: Each layer and the layers directly below it (the allowance is transitive).
BELOW: dict[str, set[str]] = {
    "protocol": set(),
    "models": {"protocol"},
    "core": {"models"},
    "p2p": {"core"},
    "jobs": {"p2p"},
    "index": {"jobs"},
    "inference": {"jobs", "index"},
    "rag": {"index", "inference"},
    "blobs": {"jobs"},
    "api": {"rag", "blobs"},
    "daemon": {"api"},
    "client": {"core"},
    "cli": {"client", "models"},
}
#: Layers one layer may import without what those may import: ``calinode start`` runs the
#: daemon, which does not let the command line reach into the running node's layers.
ALSO: dict[str, set[str]] = {"cli": {"daemon"}}

#: Packages whose modules all sit in one layer.
PACKAGE_LAYERS = {
    "calinode.protocol": "protocol",
    "calinode.models": "models",
    "calinode.node.p2p": "p2p",
    "calinode.node.jobs": "jobs",
    "calinode.node.inference": "inference",
    "calinode.node.index": "index",
    "calinode.node.rag": "rag",
    "calinode.node.blobs": "blobs",
    "calinode.node.api": "api",
    "calinode.node.dashboard": "api",  # the dashboard is part of the local HTTP API
    "calinode.node.cli": "cli",
}

#: The modules at the top of ``node/``, each placed explicitly (a new one must be placed too).
NODE_TOP_LEVEL = {
    "calinode.node": "core",  # the package itself: __version__
    "calinode.node.access": "core",  # who is a member: pure decisions the job handlers ask
    "calinode.node.config": "core",
    "calinode.node.doctor_rules": "core",  # calinode doctor's verdicts: pure, used by the CLI
    "calinode.node.hlc": "core",
    "calinode.node.home": "core",
    "calinode.node.ingest_input": "core",  # what ingest takes: shared by CLI, API, rag
    "calinode.node.identity": "core",
    "calinode.node.invite": "core",
    "calinode.node.metrics": "core",  # Prometheus metrics: every layer records into them
    "calinode.node.node_file": "core",
    "calinode.node.private_files": "core",
    "calinode.node.readiness": "core",  # /readyz: a pure decision over the node's state
    "calinode.node.rejections": "core",
    "calinode.node.supervision": "core",
    "calinode.node.client": "client",
    "calinode.node.daemon": "daemon",
}

#: Imports that point back up today, as (importer, imported). Each needs more than a move to
#: go, and each is removed in step 2 of issue 11; the test fails when one no longer exists,
#: so this list only shrinks.
KNOWN_BACK_EDGES: dict[tuple[str, str], str] = {
}


def module_name(path: Path, folder: str) -> str:
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGES[folder], *parts))


def all_modules() -> dict[str, Path]:
    return {module_name(path, folder): path
            for folder in PACKAGES for path in sorted((ROOT / folder).rglob("*.py"))}


def layer_of(module: str) -> str:
    if module in NODE_TOP_LEVEL:
        return NODE_TOP_LEVEL[module]
    for package in sorted(PACKAGE_LAYERS, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return PACKAGE_LAYERS[package]
    raise AssertionError(f"{module} is in no layer: add it to NODE_TOP_LEVEL or a package")


def allowed(layer: str) -> set[str]:
    """``layer``, every layer below it (transitively) and its ``ALSO`` layers."""
    seen, todo = {layer}, [layer]
    while todo:
        for lower in BELOW[todo.pop()]:
            if lower not in seen:
                seen.add(lower)
                todo.append(lower)
    return seen | ALSO.get(layer, set())


def imported(tree: ast.Module, module: str, path: Path, known: set[str]) -> set[str]:
    """Every calinode module ``tree`` imports, wherever the import statement is. ``from
    package import name`` is the module ``package.name`` when there is one."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, up level - 1
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    return {t for t in targets if t == "calinode" or t.startswith("calinode.")}


def back_edges() -> set[tuple[str, str]]:
    modules = all_modules()
    known = set(modules)
    edges = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        mine = allowed(layer_of(module))
        for target in imported(tree, module, path, known):
            if target == "calinode":
                raise AssertionError(f"{module} imports the calinode namespace itself")
            if layer_of(target) not in mine:
                edges.add((module, target))
    return edges


def test_every_node_module_has_a_layer() -> None:
    modules = all_modules()
    for module in modules:
        layer_of(module)  # raises for a module in no layer
    stale = set(NODE_TOP_LEVEL) - set(modules)
    assert not stale, f"NODE_TOP_LEVEL names modules that do not exist: {sorted(stale)}"


def test_imports_point_one_way() -> None:
    found = back_edges()
    new = sorted(found - set(KNOWN_BACK_EDGES))
    assert not new, "imports that point back up the layers:\n" + "\n".join(
        f"  {a} ({layer_of(a)}) -> {b} ({layer_of(b)})" for a, b in new)


def test_known_back_edges_still_exist() -> None:
    """A back edge that is gone must leave KNOWN_BACK_EDGES, so the list only shrinks."""
    gone = sorted(set(KNOWN_BACK_EDGES) - back_edges())
    assert not gone, f"no longer imported, remove from KNOWN_BACK_EDGES: {gone}"


def test_the_rule_catches_a_function_level_import_back_up() -> None:
    """The walk sees an import inside a function and one under TYPE_CHECKING."""
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from calinode.node.daemon import Node\n"
              "def f():\n    from calinode.node.api import app\n")
    path = ROOT / "node" / "p2p" / "example.py"
    known = set(all_modules())
    got = imported(ast.parse(source), "calinode.node.p2p.example", path, known)
    assert got == {"calinode.node.daemon", "calinode.node.api.app"}
    assert {layer_of(t) for t in got} - allowed("p2p") == {"daemon", "api"}
