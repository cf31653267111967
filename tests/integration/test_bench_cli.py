"""``calinode bench`` on a real 2-node swarm (OS processes on 127.0.0.1), as the real CLI.

Both nodes serve the default models: the bench measures every model on both (through the
node it asks), and the round trip and throughput to the other one. Speeds are never
asserted, only that every figure is there and positive. (The table printed without
``--json`` is made from the same rows: tests/unit/test_doctor_cli.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon_harness import Swarm, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = {"embed": "minilm-l6-int8", "generate": "smollm2-135m"}


def test_bench_json_gives_numbers_for_each_model_and_peer(swarm: Swarm,
                                                           prepared_models: Path) -> None:
    a = swarm.daemon("a", models=prepared_models).start()
    b = swarm.daemon("b", models=prepared_models).start("--bootstrap", a.addr)
    wait_for(lambda: a.peers()[b.peer_id]["alive"]
             and a.peers()[b.peer_id]["capabilities"]["generate"], 60, "a to see b's models")

    proc = run_cli("bench", "--home", str(a.home), "--json", "--seconds", "0.2", timeout=600)
    report = json.loads(proc.stdout)
    assert report["node"] == a.peer_id
    rows = {(r["peer_id"], r["what"], r["model"]): r for r in report["results"]}
    expected = {(peer.peer_id, what, model) for peer in (a, b)
                for what, model in MODELS.items()}
    expected |= {(b.peer_id, "rtt", None), (b.peer_id, "echo", None)}
    assert set(rows) == expected, report
    for (peer, _, _), row in rows.items():
        assert "error" not in row, row
        assert row["self"] == (peer == a.peer_id)
        assert row["count"] >= 1
    for peer in (a, b):
        embed = rows[(peer.peer_id, "embed", MODELS["embed"])]
        assert embed["texts_per_s"] > 0 and embed["texts"] == embed["count"] * embed["batch"]
        generate = rows[(peer.peer_id, "generate", MODELS["generate"])]
        assert generate["tokens_per_s"] > 0 and generate["tokens"] > 0
    rtt = rows[(b.peer_id, "rtt", None)]["rtt_ms"]
    assert 0 < rtt["min"] <= rtt["median"] <= rtt["max"]
    echo = rows[(b.peer_id, "echo", None)]
    assert echo["mib_per_s"] > 0 and echo["bytes"] == 2 * (1 << 20) * echo["count"]
    # the nodes still serve after being measured
    assert a.api("ping", b.peer_id, count=1)["served_by"] == b.peer_id
