"""``GET /metrics`` and ``GET /readyz`` of real daemons (issue 13).

The scrape is parsed by prometheus_client's own parser, and every counter of the work done is
checked to have moved by exactly that work: texts embedded, tokens generated, jobs served,
documents acknowledged, searches answered. ``/readyz`` is watched from a node's first answer
on: 503 with its reasons while it loads its models and learns the swarm, 200 once its
replicas are synced."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from calinode.node.client import CalinodeClient
from calinode.node.metrics import JOB_KINDS
from calinode.protocol.ids import JOB_PROTOCOL
from daemon_harness import Daemon, Swarm, free_port, wait_for
from hostile_peer import open_hostile_peer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EMBED_MODEL = "minilm-l6-int8"
GEN_MODEL = "smollm2-135m"
DOCS = [{"_id": f"doc-{i}", "title": f"Report {i}",
         "text": f"Report {i} studies wing flutter at Mach {i / 10:.1f}, the heat transfer "
                 f"of a blunt body and the boundary layer of plate number {i}."}
        for i in range(12)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(daemon: Daemon) -> Samples:
    """One scrape of the daemon's /metrics, parsed as Prometheus parses it."""
    response = httpx.get(f"http://{daemon.info['api']}/metrics", headers=daemon.auth,
                         timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, given), v in samples.items() if n == name and want <= set(given))


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def start_pair(swarm: Swarm, models: Path) -> tuple[Daemon, Daemon]:
    """n1: the models and an index; n2: an index, no models (its embed and generate jobs go
    to n1), bootstrapped from n1."""
    n1 = swarm.daemon("n1", models=models).start("--index", "--threads", "1")
    n2 = swarm.daemon("n2").start("--index", "--bootstrap", n1.addr)
    wait_for(lambda: n2.peers().get(n1.peer_id, {}).get("alive")
             and n1.peers().get(n2.peer_id, {}).get("alive"), 30, "the pair")
    return n1, n2


def test_metrics_count_exactly_the_work_done(swarm: Swarm, prepared_models: Path) -> None:
    n1, n2 = start_pair(swarm, prepared_models)
    api1, api2 = CalinodeClient.from_home(n1.home), CalinodeClient.from_home(n2.home)
    with api1, api2:
        api1.create_collection("reports", shards=4, replicas=2)
        wait_for(lambda: any(c["name"] == "reports" for c in n2.collections()), 30,
                 "the definition on n2")
        unauthenticated = httpx.get(f"http://{n1.info['api']}/metrics", timeout=30)
        assert unauthenticated.status_code == 401  # /metrics needs the token
        b1, b2 = scrape(n1), scrape(n2)

        # 12 documents ingested through n2: 12 acknowledged, their chunks embedded on n1
        summary = api2.ingest("reports", DOCS)
        assert summary["acknowledged"] == 12 and not summary["failed"]
        i1, i2 = scrape(n1), scrape(n2)
        assert moved(b2, i2, "calinode_ingest_documents_total", outcome="acknowledged") == 12
        assert moved(b2, i2, "calinode_ingest_documents_total", outcome="failed") == 0
        assert moved(b1, i1, "calinode_ingest_documents_total", outcome="acknowledged") == 0
        assert moved(b1, i1, "calinode_embed_texts_total", model=EMBED_MODEL) == \
            summary["chunks"] > 0
        assert moved(b1, i1, "calinode_jobs_total", kind="embed_chunks", hop="remote",
                     outcome="served") >= 1

        # 5 texts asked on n2 run on n1 (the only embedder): one remote embed job
        assert len(api2.embed([f"text {i} on flutter" for i in range(5)])["vectors"]) == 5
        # 3 texts asked on n1 itself: one local embed job
        assert len(api1.embed([f"local text {i}" for i in range(3)])["vectors"]) == 3
        e1, e2 = scrape(n1), scrape(n2)
        assert moved(i1, e1, "calinode_embed_texts_total", model=EMBED_MODEL) == 8
        assert moved(i1, e1, "calinode_jobs_total", kind="embed", hop="remote",
                     outcome="served") == 1
        assert moved(i1, e1, "calinode_jobs_total", kind="embed", hop="local",
                     outcome="served") == 1
        assert moved(i2, e2, "calinode_job_duration_seconds_count", kind="embed",
                     hop="remote") == 1
        assert moved(i1, e1, "calinode_job_duration_seconds_count", kind="embed",
                     hop="local") == 1
        assert moved(i2, e2, "calinode_embed_texts_total", model=EMBED_MODEL) == 0

        # one generation asked on n2, run on n1: its tokens, exactly
        reply = api2.generate(prompt="The boundary layer of a flat plate", max_tokens=8,
                              temperature=0.0)
        g1, g2 = scrape(n1), scrape(n2)
        assert reply["served_by"] == n1.peer_id
        assert moved(e1, g1, "calinode_generate_tokens_total", model=GEN_MODEL,
                     type="completion") == reply["usage"]["completion_tokens"] > 0
        assert moved(e1, g1, "calinode_generate_tokens_total", model=GEN_MODEL,
                     type="prompt") == reply["usage"]["prompt_tokens"]
        assert moved(e1, g1, "calinode_jobs_total", kind="generate", hop="remote",
                     outcome="served") == 1
        assert moved(e2, g2, "calinode_job_duration_seconds_count", kind="generate",
                     hop="remote") == 1

        # one search on n2: +1 search, not partial, its one query embedded on n1
        (found,) = api2.search("reports", "heat transfer of a blunt body", k=3)
        s1, s2 = scrape(n1), scrape(n2)
        assert len(found["hits"]) == 3 and not found["partial"]
        assert moved(g2, s2, "calinode_searches_total") == 1
        assert moved(g2, s2, "calinode_search_partial_answers_total") == 0
        assert moved(g1, s1, "calinode_searches_total") == 0
        assert moved(g1, s1, "calinode_embed_texts_total", model=EMBED_MODEL) == 1

        # read from state: peers, models, replicas, refused input (the same counts as status)
        for daemon, samples in ((n1, s1), (n2, s2)):
            assert value(samples, "calinode_peers", state="alive") == 1
            assert value(samples, "calinode_info", version=daemon.status()["version"],
                         peer_id=daemon.peer_id) == 1
            assert value(samples, "calinode_shard_replicas", collection="reports",
                         state="ready") == 4  # 4 shards, 2 replicas, 2 index nodes
            assert total(samples, "calinode_p2p_bytes_total", protocol=JOB_PROTOCOL) > 0
            assert total(samples, "calinode_membership_round_trip_seconds_count") > 0
            rejected = daemon.status()["rejected_input"]
            for (name, labels), count in samples.items():
                if name == "calinode_rejected_input_total":
                    assert count == rejected.get(dict(labels)["reason"], 0)
        for kind in ("embed", "generate"):
            for model in n1.status()["capabilities"][kind]:
                assert value(s1, "calinode_model_info", kind=kind, model=model["name"],
                             sha256=model["sha256"]) == 1
        assert total(s2, "calinode_model_info") == 0

        # replica sizes are measured off the event loop at most every 5 s: they come round
        wait_for(lambda: value(scrape(n2), "calinode_shard_documents",
                               collection="reports") == 12, 60, "n2's replica sizes")
        sizes = scrape(n2)
        assert value(sizes, "calinode_shard_chunks", collection="reports") == summary["chunks"]
        assert value(sizes, "calinode_shard_bytes", collection="reports") > 0
        # the node still serves after all those scrapes
        assert api2.ping(n1.peer_id)["served_by"] == n1.peer_id


def readyz(port: int) -> tuple[int, dict[str, Any]] | None:
    """One answer of /readyz (no token: it is open like /healthz); None while nothing
    listens yet."""
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return response.status_code, response.json()


def test_readyz_flips_to_200_once_models_are_loaded_and_replicas_synced(
    swarm: Swarm, prepared_models: Path
) -> None:
    n1, n2 = start_pair(swarm, prepared_models)
    with CalinodeClient.from_home(n1.home) as api:
        api.create_collection("reports", shards=4, replicas=2)
        wait_for(lambda: any(c["name"] == "reports" for c in n2.collections()), 30,
                 "the definition on n2")
        assert api.ingest("reports", DOCS)["acknowledged"] == 12
    wait_for(lambda: readyz(int(n2.info["api"].rsplit(":", 1)[1])) == (200, {
        "ready": True, "reasons": [], "peer_id": n2.peer_id}), 60, "n2 ready")

    # n3 joins with models and an index. Its heartbeat is slow (4 s), so it learns the swarm
    # (two rounds) well after its API answers: the first answers are 503 for certain.
    port = free_port()
    n3 = swarm.daemon("n3", models=prepared_models)
    answers: list[tuple[int, dict[str, Any]]] = []
    starting = threading.Thread(target=n3.start, args=(
        "--index", "--threads", "1", "--bootstrap", n1.addr, "--api", f"127.0.0.1:{port}",
        "--heartbeat-interval", "4", "--dead-after", "10"))
    starting.start()
    try:
        deadline = time.monotonic() + 90
        while not answers or answers[-1][0] != 200:
            assert time.monotonic() < deadline, f"n3 never became ready: {answers[-3:]}"
            assert n3.proc is None or n3.proc.poll() is None, f"n3 exited:\n{n3.log()}"
            answer = readyz(port)
            if answer is not None and (not answers or answers[-1] != answer):
                answers.append(answer)
            time.sleep(0.05)
    finally:
        starting.join(120)
    print("\nn3's /readyz answers, in order:")
    for status, body in answers:
        print(f"  {status} {body['reasons']}")
    first_status, first = answers[0]
    assert first_status == 503 and not first["ready"] and first["reasons"]
    assert any("learning the swarm" in reason for _, body in answers
               for reason in body["reasons"])
    assert answers[-1] == (200, {"ready": True, "reasons": [], "peer_id": n3.peer_id})
    # ready means: models loaded, replicas synced (status agrees), and it holds its share
    status = n3.status()
    assert status["replicas_not_ready"] == {}
    assert {m["name"] for m in status["capabilities"]["embed"]} == {EMBED_MODEL}
    assert status["capabilities"]["shards"].get("reports")
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_a_peer_naming_any_job_kind_cannot_grow_the_label_set(swarm: Swarm) -> None:
    """A real hostile peer sends jobs of 40 made-up kinds (in two rounds of 20) and a broken
    frame: the scrape counts them exactly, under kind ``other``; the second 20 kinds add no
    series at all; the node still serves."""
    node = swarm.daemon("target").start()
    before = scrape(node)
    made_up = [f"evil.kind-{n}-{'x' * n}" for n in range(40)]
    replies: list[dict[str, Any]] = []

    def attack(kinds: list[str]) -> None:
        async def main() -> None:
            async with open_hostile_peer() as evil:
                await evil.connect(node.addr)
                for kind in kinds:
                    replies.append(await evil.job(node.peer_id, kind, {}))
                await evil.send_raw(node.peer_id, JOB_PROTOCOL, b"\x00\x00\x00\x02\xc1\xc1")
                replies.append(await evil.job(node.peer_id, "ping", {}))

        trio.run(main)

    attack(made_up[:20])
    middle = scrape(node)
    attack(made_up[20:])
    after = scrape(node)
    assert [r.get("code") for r in replies if r["t"] == "err"] == ["UNKNOWN_KIND"] * 40
    assert [r for r in replies if r["t"] == "res"] and replies[-1]["t"] == "res"  # serving
    kinds = {dict(labels)["kind"] for (_, labels) in after if "kind" in dict(labels)}
    assert kinds <= {*JOB_KINDS, "other"}
    assert set(after) == set(middle)  # 20 more made-up kinds: not one more series
    assert {dict(labels).get("kind") for _, labels in set(after) - set(before)} <= {"other"}
    assert moved(before, after, "calinode_job_failures_total", kind="other",
                 code="UNKNOWN_KIND") == 40
    assert moved(before, after, "calinode_jobs_total", kind="other", hop="remote",
                 outcome="failed") == 42  # the 40, and the two broken frames
    assert moved(before, after, "calinode_jobs_total", kind="ping", hop="remote",
                 outcome="served") == 2
    assert value(after, "calinode_rejected_input_total", reason="bad_frame") == \
        node.status()["rejected_input"]["bad_frame"] == 2
    assert moved(before, after, "calinode_p2p_bytes_total", protocol=JOB_PROTOCOL,
                 direction="in") > 0
