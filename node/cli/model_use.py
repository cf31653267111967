"""Who uses an installed model: the collections of this home that pin it, and the running node
of this home that serves it. ``calinode models remove`` refuses such a model (unless
``--force``, which prints what will break) and ``models prepare``/``add`` say how to serve one.

Read-only: collection definitions are read from ``$CALINODE_HOME/collections/*.json`` without
:class:`~calinode.node.index.collections.CollectionBook` (which sets unreadable files aside: a
CLI that only looks must not move files), and the running node is asked over its local API
only when this home's ``node.json`` names one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import CalinodeError, ErrorCode

#: Seconds to wait for the running node's status before deciding it is not there.
STATUS_TIMEOUT = 5.0


@dataclass(frozen=True)
class RunningNode:
    """What this home's running node answered (``served``: (kind, name) pairs), or why it
    could not be asked (``unknown``: a reason; the node may or may not serve the model)."""

    api: str
    served: frozenset[tuple[str, str]] = frozenset()
    unknown: str | None = None


def pinning_collections(home: Path, model: str) -> list[str]:
    """Names of the live (not dropped) collections of ``home`` whose definition pins
    ``model``. Unreadable definition files are skipped (the daemon sets them aside)."""
    names = []
    for path in sorted((home / "collections").glob("*.json")):
        try:
            definition = CollectionDef.from_wire(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, CalinodeError):
            continue
        if definition.model == model and not definition.dropped:
            names.append(definition.name)
    return names


def served_models(status: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """``(kind, name)`` of every model in a ``/v1/status`` answer's capabilities. Pure."""
    caps = status.get("capabilities")
    served: set[tuple[str, str]] = set()
    if isinstance(caps, dict):
        for kind in ("embed", "generate"):
            entries = caps.get(kind)
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    served.add((kind, entry["name"]))
    return frozenset(served)


def running_node(home: Path) -> RunningNode | None:
    """The node running on ``home`` (None when none answers at the API its ``node.json``
    names, or there is no ``node.json``)."""
    from calinode.node.client import CalinodeClient
    from calinode.node.node_file import read_node_file
    from calinode.node.private_files import read_api_token

    info = read_node_file(home)
    api = info.get("api") if info else None
    if not isinstance(api, str):
        return None
    try:
        token = read_api_token(home)
        with CalinodeClient(api, token=token, timeout=STATUS_TIMEOUT) as client:
            status = client.status()
    except CalinodeError as exc:
        if exc.code == ErrorCode.PEER_UNREACHABLE:
            return None  # a stale node.json: nothing answers there
        return RunningNode(api=api, unknown=exc.message)
    return RunningNode(api=api, served=served_models(status))


def removal_breaks(name: str, kind: str, collections: list[str],
                   node: RunningNode | None, *, preparable: bool) -> list[str]:
    """What removing model ``name`` breaks, one sentence each (empty: nothing). Pure.
    ``preparable``: an embedded default, which ``calinode start`` prepares again when it
    is missing."""
    breaks = [f"collection {c} pins {name}: once the node of this home runs without it, "
              f"that node cannot embed the collection's documents and queries itself (peers "
              f"with the same model still can) until {name} is installed again"
              for c in collections]
    if node is not None and node.unknown is not None:
        breaks.append(f"the node running on this home (API {node.api}) could not say whether "
                      f"it serves {name}: {node.unknown}")
    elif node is not None and (kind, name) in node.served:
        restart = ("its next start prepares it again" if preparable else
                   f"its next start fails unless {name} is installed again or it is started "
                   "without it")
        breaks.append(f"the node running on this home (API {node.api}) serves {name}: it "
                      f"keeps it in memory until it stops; {restart}")
    return breaks


def serve_hint(name: str, kind: str, node: RunningNode | None, *, default: bool) -> str | None:
    """How to get ``name`` served, or None when this home's running node serves it. Pure.
    ``default``: a model ``calinode start`` serves without flags."""
    flag = "--embed-model" if kind == "embed" else "--gen-model"
    if node is not None and (kind, name) in node.served:
        return None
    if node is not None and node.unknown is None:
        return (f"the running node does not serve {name} (a node loads its models at start); "
                f"serve it: stop the node, then calinode start {flag} {name}")
    if default:
        return f"serve it: calinode start (a default model) or calinode start {flag} {name}"
    return f"serve it: calinode start {flag} {name}"
