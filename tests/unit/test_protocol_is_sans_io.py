"""calinode.protocol stays sans-I/O: importing all of it pulls in neither trio nor libp2p."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

FORBIDDEN = ("trio", "libp2p")

# Runs in a fresh interpreter, so that modules imported by the test session do not count.
PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import calinode.protocol as package

    names = [package.__name__] + [
        info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    ]
    for name in names:
        importlib.import_module(name)
    print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
    """
)


def test_importing_every_protocol_module_loads_neither_trio_nor_libp2p() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(result.stdout)
    imported = set(report["imported"])
    assert {
        "calinode.protocol.codec",
        "calinode.protocol.errors",
        "calinode.protocol.framing",
        "calinode.protocol.ids",
        "calinode.protocol.limits",
        "calinode.protocol.messages",
        "calinode.protocol.records",
        "calinode.protocol.validation",
        "calinode.protocol.vectors",
    } <= imported
    offenders = [
        name
        for name in report["loaded"]
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]
    assert offenders == []
