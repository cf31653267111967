from collections.abc import Iterator

import pytest

from calinode.node.rag import sync as rag_sync
from node_harness import bootstrap_of  # noqa: F401  (fixture)

#: Seconds between the replica sync rounds of in-process nodes: the daemon's 2 s made every
#: node-tier test that waits for a sync round (a pull, a hostile holder's next listing, a
#: restarted replica catching up) wait up to 2 s per round, as the heartbeats here are
#: already 0.3 s instead of 1 s (node_harness.node_config). SYNC_QUIET and MAX_SYNC_DEFER,
#: whose bounds some tests exercise, keep their own values.
TEST_SYNC_INTERVAL = 0.5


@pytest.fixture(autouse=True)
def quick_sync_rounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rag_sync, "SYNC_INTERVAL", TEST_SYNC_INTERVAL)
    yield
