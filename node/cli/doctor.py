"""``calinode doctor``: check a node and its swarm, and say what to do about each problem.

The node's view comes from ``GET /v1/doctor`` (facts: addresses, swarm key mode, peers and
their clocks, refused input; ``node/api/doctor_routes.py``). This machine's files are checked
here: every model the node serves re-hashed against its manifest's sha256 (in worker
threads, :data:`HASH_WORKERS` at a time), the API token's and swarm key's mode and owner, the
free disk under the home. The verdicts are pure (``node/doctor_rules.py``).

Exit status: 0 when nothing needs fixing (notes may be printed), :data:`EXIT_PROBLEMS` (10)
when something does, the usual error statuses (``calinode --help``) when the doctor itself
cannot run. With no node answering, the local checks still run and ``node_unreachable`` is
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from calinode.node.doctor_rules import EXIT_PROBLEMS, Finding, judge, needs_fixing
from calinode.protocol.errors import CalinodeError

__all__ = ["add_doctor_parser", "cmd_doctor", "local_facts"]

HASH_WORKERS = 2
#: how long the node may take to gather its facts (it pings every live peer, 3 s each at most)
DOCTOR_TIMEOUT = 30.0

EPILOG = f"""\
exit status: 0 nothing to fix (notes may be shown), {EXIT_PROBLEMS} something to fix (each
problem is printed with what to do next); other statuses as in calinode --help.
checks: listen addresses and how peers reach them, swarm key and refused connections, clock
skew to every live peer, model files against their sha256, free disk under the home, API
token and swarm key file modes, DEAD or degraded peers, refused peer input."""


def add_doctor_parser(sub: Any) -> None:
    sub.add_parser("doctor", help="check this node and its swarm; say what to fix",
                   description="Check the running node, its peers and this machine's files, "
                   "and print each problem with what to do next.", epilog=EPILOG)


def _file_facts(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return {"path": str(path), "exists": False}
    return {"path": str(path), "exists": True, "mode": st.st_mode & 0o777,
            "owner_uid": st.st_uid, "uid": os.getuid()}


def _verify_models(home: Path, names: list[str] | None) -> list[dict[str, Any]]:
    """Re-hash the files of ``names`` (None: every installed model), in worker threads."""
    from calinode.models.registry import ModelRegistry

    registry = ModelRegistry(home / "models")
    wanted = registry.names() if names is None else names

    def verify(name: str) -> dict[str, Any]:
        try:
            return {"name": name, "problems": registry.verify(name)}
        except CalinodeError as exc:
            return {"name": name, "problems": [exc.message]}
        except OSError as exc:
            return {"name": name, "problems": [f"cannot read it: {exc}"]}

    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        return list(pool.map(verify, wanted))


def local_facts(home: Path, node: dict[str, Any] | None) -> dict[str, Any]:
    """What this machine says: model files, token and key files, free disk."""
    names = None if node is None else sorted({m["name"] for m in node.get("models") or []})
    keys = [home / "swarm.key"]
    key_file = ((node or {}).get("swarm") or {}).get("key_file")
    if key_file and Path(key_file) != keys[0]:
        keys.append(Path(key_file))
    disk_path = home if home.exists() else home.parent
    try:
        usage = shutil.disk_usage(disk_path)
        disk: dict[str, Any] | None = {"path": str(disk_path), "free_bytes": usage.free,
                                       "total_bytes": usage.total}
    except OSError:
        disk = None
    return {"home": str(home), "models": _verify_models(home, names),
            "token": _file_facts(home / "api.token"),
            "swarm_keys": [_file_facts(k) for k in keys], "disk": disk}


def _render(node: dict[str, Any] | None, local: dict[str, Any],
            findings: list[Finding]) -> str:
    if node is not None:
        peers = node.get("peers") or []
        alive = sum(1 for p in peers if p.get("alive"))
        head = (f"node {node['peer_id']}, {alive} of {len(peers)} peers alive; swarm: "
                f"{node.get('swarm', {}).get('mode', '?')}")
    else:
        head = f"no node answering for home {local['home']}"
    models = len(local.get("models") or [])
    lines = [head]
    if node is not None:
        network = node.get("network") or {}
        inbound = sum(1 for row in (network.get("connections") or {}).values()
                      if row.get("inbound"))
        observed = ", ".join(network.get("observed_addrs") or []) or "none reported"
        lines.append(f"addresses: {', '.join(node.get('addrs') or []) or 'none'}; "
                     f"{inbound} peer(s) dialled in; observed by peers as: {observed}")
    lines.append(f"checked: addresses, swarm key, clocks, refused input, peers, "
                 f"{models} model(s), disk, token")
    for f in findings:
        label = "PROBLEM" if f.severity == "problem" else "note"
        lines.append(f"{label:8} {f.check}: {f.subject}: {f.what}")
        lines.append(f"{'':8} fix: {f.fix}")
    problems = sum(1 for f in findings if f.severity == "problem")
    lines.append("nothing to fix" if not problems else f"{problems} problem(s) to fix")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace, client_factory: Any) -> int:
    from calinode.node.config import resolve_home

    node: dict[str, Any] | None = None
    node_error = ""
    try:
        with client_factory(args) as client:
            node = client.doctor(timeout=DOCTOR_TIMEOUT)
    except CalinodeError as exc:
        node_error = f"{exc.code.value}: {exc.message}"
    home = Path(node["home"]) if node is not None else resolve_home(args.home, os.environ)
    local = local_facts(home, node)
    if node is None:
        local["node_error"] = node_error
    findings = judge(node, local)
    status = EXIT_PROBLEMS if needs_fixing(findings) else 0
    if args.json:
        print(json.dumps({"ok": status == 0, "exit_status": status,
                          "findings": [f.to_json() for f in findings],
                          "facts": {"node": node, "local": local}}, indent=2))
    else:
        print(_render(node, local, findings))
    return status
