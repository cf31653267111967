"""Test-suite-wide settings: the Hypothesis profiles.

- ``ci`` (loaded when the environment has ``CI=true``): 10 000 examples per property, which the
  protocol fuzz tests require; no example database (CI starts from a clean clone anyway).
- ``dev`` (everywhere else): 500 examples, so that the unit tier stays quick on a laptop.

Both disable Hypothesis' per-example deadline: timing varies too much across machines (and under
tracemalloc) to be a test failure.  Properties that are not fuzz tests scale their example count
down from the profile's (see ``tests/unit/protocol_strategies.py``).
``HYPOTHESIS_PROFILE=<name>`` overrides the choice.

And where the warnings filter is lifted: ``pyproject.toml`` ignores ``ResourceWarning`` (and the
unraisable-exception warnings that carry them) because py-libp2p 0.8.1 drops the sockets of
closed connections without closing them. That excuse holds only where py-libp2p runs: the
tiers without it (``unit``, ``models``, ``shards``: the protocol, the stores, the models, the
CLI's pure parts) turn both back into errors, so a file, store or session calinode itself
leaves open fails its test.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=10_000, deadline=None, database=None)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


#: Test folders where no py-libp2p host runs: an unclosed resource there is calinode's own.
NO_LIBP2P_TIERS = ("unit", "models", "shards")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name in NO_LIBP2P_TIERS:
            item.add_marker(pytest.mark.filterwarnings("error::ResourceWarning"))
            item.add_marker(pytest.mark.filterwarnings(
                "error::pytest.PytestUnraisableExceptionWarning"))
