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

import gc
import os
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import settings

# the daemon fixtures, registered once here so that every tier that runs daemons (integration,
# browser) shares the session's one prepared model home
sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))
from daemon_harness import prepared_models, swarm  # noqa: F401  (fixtures)

try:  # pytest >= 8.4 queues unraisable exceptions and reports them at the next test phase
    from _pytest.unraisableexception import collect_unraisable as _drain_unraisable
except ImportError:  # older: reported within the phase that raised them
    _drain_unraisable = None  # type: ignore[assignment]

settings.register_profile("ci", max_examples=10_000, deadline=None, database=None)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


#: Test folders where no py-libp2p host runs: an unclosed resource there is calinode's own.
NO_LIBP2P_TIERS = ("unit", "models", "shards")


def _strict(item: pytest.Item) -> bool:
    return item.path.parent.name in NO_LIBP2P_TIERS


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _strict(item):
            item.add_marker(pytest.mark.filterwarnings("error::ResourceWarning"))
            item.add_marker(pytest.mark.filterwarnings(
                "error::pytest.PytestUnraisableExceptionWarning"))


_previous_strict = [True]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Entering a strict tier after a py-libp2p one: collect the garbage the libp2p tests left
    (their sockets) with the excuse still on, so it is not charged to the first strict test
    (pytest reports an unraisable warning at the next test phase, whichever test it is)."""
    strict = _strict(item)
    if strict and not _previous_strict[0]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc.collect()
            if _drain_unraisable is not None:
                _drain_unraisable(item.config)
    _previous_strict[0] = strict
