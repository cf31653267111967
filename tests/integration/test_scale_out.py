"""A large embed spread over real daemons in proportion to their speed (issue 14).

Three daemons with the default embedder, one of them 5x slower (``--test-only-embed-slowdown
5``): a 2048-text embed submitted on a fast one must not wait for the slow one. Asserted by
behaviour, not by timing: the slow peer served at most a small share of the batches (an
equal split, what the dispatcher did before, gives it a third), both fast peers served, and
every text came back in order with the vectors a local embed gives.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from calinode.node.client import CalinodeClient
from daemon_harness import Daemon, Swarm, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "minilm-l6-int8"
TEXTS = [f"Passage {i}: the {['lift', 'drag', 'heat flux', 'shock'][i % 4]} of a "
         f"{['thin', 'swept', 'blunt'][i % 3]} body at Mach {i % 7 + 1}, case {i * 37 % 1000}."
         for i in range(2048)]
LOCAL_BATCH = 16  # at most MIN_SPLIT texts: one job, not split
SAMPLE_EVERY = 32  # the smallest batch (MIN_BATCH): every batch overlaps a checked block


def serves(daemon: Daemon, peer_id: str) -> bool:
    row = daemon.peers().get(peer_id)
    return bool(row and row["alive"]
                and any(m["name"] == MODEL for m in row["capabilities"]["embed"]))


def embed_rate(daemon: Daemon, peer_id: str) -> float | None:
    row = daemon.peers().get(peer_id)
    if not row or not row["alive"]:
        return None
    offers = [m for m in row["capabilities"]["embed"] if m["name"] == MODEL]
    return offers[0].get("rate") if offers else None


def test_a_5x_slower_embedder_gets_a_small_share_and_every_vector_is_right(
        swarm: Swarm, prepared_models: Path) -> None:
    fast = swarm.daemon("fast", models=prepared_models).start("--threads", "1")
    other = swarm.daemon("other", models=prepared_models).start(
        "--threads", "1", "--bootstrap", fast.addr)
    slow = swarm.daemon("slow", models=prepared_models).start(
        "--threads", "1", "--bootstrap", fast.addr, "--test-only-embed-slowdown", "5")
    wait_for(lambda: serves(fast, other.peer_id) and serves(fast, slow.peer_id), 60,
             "both embedding peers seen by the first")

    with CalinodeClient.from_home(fast.home) as api:
        result = api.embed(TEXTS, model=MODEL, timeout=600)  # a safety net
        served = Counter(result["served_by"])
        batches = len(result["served_by"])
        assert batches >= 12, result["served_by"]  # cut into many batches, not 3 parts
        assert served[slow.peer_id] <= 0.2 * batches, served
        assert served[fast.peer_id] > served[slow.peer_id], served
        assert served[other.peer_id] > served[slow.peer_id], served
        vectors = np.array(result["vectors"], dtype=np.float32)
        assert vectors.shape == (len(TEXTS), 384)
        # a block of LOCAL_BATCH texts every SAMPLE_EVERY, embedded as one small job: spread
        # over every batch of the large embed, each must be in its place
        for at in range(0, len(TEXTS), SAMPLE_EVERY):
            local = np.array(api.embed(TEXTS[at:at + LOCAL_BATCH], model=MODEL,
                                       timeout=300)["vectors"], dtype=np.float32)
            assert np.allclose(vectors[at:at + LOCAL_BATCH], local, atol=1e-4), at

    # the slow peer's advertised rate says what the coordinator measured: far below a fast one's
    wait_for(lambda: (embed_rate(fast, slow.peer_id) or 0) > 0
             and (embed_rate(fast, other.peer_id) or 0) > 0, 30, "rates advertised")
    assert embed_rate(fast, slow.peer_id) < 0.5 * embed_rate(fast, other.peer_id)  # type: ignore[operator]
    assert fast.status()["peer_id"] == fast.peer_id  # still serving
