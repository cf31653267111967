"""The agent over the swarm with real daemons and the REAL default generate model
(smollm2-135m): a 2-node swarm holding 30 Cranfield abstracts, ``calinode ask --agent --json``
and the same through the API (streamed steps, then the answer). The model decides what to
search and fetch under the grammar of its actions; the loop must have searched, stayed within
its bounds, answered, and cited only documents of the collection."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from calinode.node.client import CalinodeClient
from daemon_harness import Swarm, run_cli, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cranfield

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if not (cranfield.DATA / "cran.all.1400").exists():
    pytest.skip(f"Cranfield data not found at {cranfield.DATA}", allow_module_level=True)

DOCS = [d for d in cranfield.corpus() if d["text"].strip()][:30]
QUESTION = "What happens to a wing in a propeller slipstream?"


def check_run(data: dict[str, Any], ids: set[str], max_steps: int, max_tokens: int) -> None:
    """What every agent run must show, whatever the model chose."""
    steps = data["steps"]
    assert 1 <= len(steps) <= max_steps, steps
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    searches = [s for s in steps if s["tool"] == "search" and "error" not in s]
    assert searches and searches[0]["hits"] > 0, steps  # the first step always searches
    assert data["usage"]["completion_tokens"] <= max_tokens
    assert data["bound"] in (None, "steps", "tokens", "deadline", "repeats")
    assert data["answer"].strip()
    assert data["sources"], data
    assert {s["doc_id"] for s in data["sources"]} <= ids
    assert [s["n"] for s in data["sources"]] == list(range(1, len(data["sources"]) + 1))


def test_the_agent_searches_the_swarm_and_cites_its_documents(
        swarm: Swarm, prepared_models: Path) -> None:
    n1 = swarm.daemon("n1", models=prepared_models).start("--index", "--threads", "1")
    n2 = swarm.daemon("n2", models=prepared_models).start(
        "--index", "--threads", "1", "--bootstrap", n1.addr)
    both = {n1.peer_id, n2.peer_id}  # a node's peers include itself
    wait_for(lambda: set(n1.peers()) == both == set(n2.peers()), 60, "the swarm")
    run_cli("collections", "create", "cran", "--shards", "4", "--replicas", "2",
            "--home", str(n1.home))
    wait_for(lambda: any(c["name"] == "cran" for c in n2.collections()), 60,
             "the definition on n2")
    ids = {d["_id"] for d in DOCS}
    with CalinodeClient.from_home(n1.home) as client:
        assert client.ingest("cran", DOCS)["acknowledged"] == len(DOCS)

    out = run_cli("ask", QUESTION, "--collection", "cran", "--agent", "--max-steps", "2",
                  "--max-tokens", "256", "--timeout", "400", "--json", "--home", str(n2.home),
                  timeout=480).stdout
    data = json.loads(out)  # one JSON object
    check_run(data, ids, max_steps=2, max_tokens=256)
    assert data["max_steps"] == 2 and data["model"] == "smollm2-135m"

    with CalinodeClient.from_home(n1.home) as client:
        events = list(client.agent_stream("cran", "Which papers study hypersonic flow?",
                                          max_steps=1, max_tokens=256, timeout=400))
    steps = [e["step"] for e in events if "step" in e]
    (done,) = [e["done"] for e in events if "done" in e]
    assert "done" in events[-1]
    assert steps == done["steps"]  # every step was streamed as it was done
    check_run(done, ids, max_steps=1, max_tokens=256)
    assert done["bound"] == "steps"  # one search, then the answer from what it found
