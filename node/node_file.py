"""``node.json`` in the home: how the CLI, scripts and tests find a running node.

Written atomically by the daemon once it is ready (``peer_id``, ``addrs``, ``api``, ``pid``,
``version``) and removed when it stops, only by the process that wrote it. Kept free of libp2p
imports so the CLI starts fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

NODE_FILE = "node.json"


def write_node_file(home: Path, info: dict[str, Any]) -> None:
    path = home / NODE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_node_file(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((home / NODE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_node_file(home: Path) -> None:
    """Remove ``node.json`` if this process wrote it (never another daemon's)."""
    info = read_node_file(home)
    if info is not None and info.get("pid") == os.getpid():
        (home / NODE_FILE).unlink(missing_ok=True)
