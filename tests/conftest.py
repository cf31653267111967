"""Test-suite-wide settings: the Hypothesis profiles.

- ``ci`` (loaded when the environment has ``CI=true``): 10 000 examples per property, which the
  protocol fuzz tests require; no example database (CI starts from a clean clone anyway).
- ``dev`` (everywhere else): 500 examples, so that the unit tier stays quick on a laptop.

Both disable Hypothesis' per-example deadline: timing varies too much across machines (and under
tracemalloc) to be a test failure.  Properties that are not fuzz tests scale their example count
down from the profile's (see ``tests/unit/protocol_strategies.py``).
``HYPOTHESIS_PROFILE=<name>`` overrides the choice.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=10_000, deadline=None, database=None)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)
