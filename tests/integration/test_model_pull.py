"""Models travel by content address between real daemons (issue 14).

- a node started with an empty home and the default models pulls both (the embedder and the
  smollm2 GGUF) from a peer: same sha256s and manifests, the same vectors, the same greedy
  generation as the source node;
- ``kill -9`` of the pulling node mid-transfer, then a restart: the pull resumes (fewer bytes
  moved than the file's size) and finishes verified (the source caps its bytes/s with the
  real ``--blob-rate`` option, to make the window wide);
- a peer serving corrupted chunks (``--test-only-corrupt-chunks``): the chunks are fetched
  again from another peer, the model is correct, and the faulty peer is reported.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calinode.node.client import CalinodeClient
from daemon_harness import CALINODE, Daemon, Swarm, _clean_env, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXTS = ["What is the lift of a thin airfoil?", "Heat transfer in hypersonic flow.",
         "Boundary layer transition on a flat plate."]
PROMPT = "Name three colours."
EMBEDDER = "minilm-l6-int8"


def advertises(daemon: Daemon, peer_id: str, name: str) -> bool:
    row = daemon.peers().get(peer_id)
    return bool(row and row["alive"] and any(
        m["name"] == name for kind in ("embed", "generate") for m in row["capabilities"][kind]))


def installed(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in daemon.cli("models", "list")}


def greedy(daemon: Daemon) -> dict[str, Any]:
    with CalinodeClient.from_home(daemon.home) as api:
        return api.generate(prompt=PROMPT, max_tokens=24, temperature=0.0, timeout=120)


def empty_models(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / f"{name}-models"
    folder.mkdir()
    return folder


def test_a_node_with_an_empty_home_pulls_its_models_and_behaves_the_same(
        swarm: Swarm, prepared_models: Path, tmp_path: Path) -> None:
    source = swarm.daemon("source", models=prepared_models).start("--threads", "1")
    puller = swarm.daemon("puller", models=empty_models(tmp_path, "puller")).start(
        "--bootstrap", source.addr, "--threads", "1")
    log = puller.log()
    for name in (EMBEDDER, "smollm2-135m"):
        assert f"model {name} is not installed here: pulling it from the swarm" in log
    assert "preparing default model" not in log  # pulled, not prepared
    mine, theirs = installed(puller), installed(source)
    for name in (EMBEDDER, "smollm2-135m"):
        assert mine[name] == theirs[name]  # name, kind, sha256, size, dims...
        assert ((puller.home / "models" / name / "manifest.json").read_bytes()
                == (prepared_models / name / "manifest.json").read_bytes())
    assert puller.cli("models", "verify") == {EMBEDDER: [], "smollm2-135m": []}
    reference = source.cli("embed", *TEXTS)
    reference_text = greedy(source)
    source_id = source.peer_id
    source.stop()  # from here on, only the pulled copies can answer
    wait_for(lambda: not advertises(puller, source_id, EMBEDDER), 30, "source gone")
    vectors = puller.cli("embed", *TEXTS)
    assert vectors["served_by"] == [puller.peer_id]
    assert np.array_equal(np.array(vectors["vectors"]), np.array(reference["vectors"]))
    text = greedy(puller)
    assert text["served_by"] == puller.peer_id
    assert text["text"] == reference_text["text"]


def pull_cli(daemon: Daemon, model: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CALINODE, "models", "pull", model, "--home", str(daemon.home),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_clean_env())


def verified_chunks(daemon: Daemon) -> int:
    logs = list((daemon.home / "models").glob(".pull-*/verified.log"))
    return len(logs[0].read_text().splitlines()) if logs else 0


def test_a_pull_killed_mid_transfer_resumes_after_a_restart(
        swarm: Swarm, prepared_models: Path, tmp_path: Path) -> None:
    source = swarm.daemon("source", models=prepared_models).start(
        "--threads", "1", "--blob-rate", str(3_000_000))
    puller = swarm.daemon("puller", models=empty_models(tmp_path, "puller"))
    extra = ("--bootstrap", source.addr, "--no-models")
    puller.start(*extra)
    wait_for(lambda: advertises(puller, source.peer_id, EMBEDDER), 30, "the source's models")
    size = installed(source)[EMBEDDER]["size"]
    first = pull_cli(puller, EMBEDDER)
    try:
        wait_for(lambda: verified_chunks(puller) >= 3, 60, "a few verified chunks")
        puller.kill()  # SIGKILL, mid-transfer
    finally:
        first.kill()
        first.wait(30)
    assert verified_chunks(puller) < -(-size // (1 << 20))  # it was cut short
    puller.start(*extra)
    wait_for(lambda: advertises(puller, source.peer_id, EMBEDDER), 30, "the source again")
    result = json.loads(run_cli("models", "pull", EMBEDDER, "--home", str(puller.home),
                                "--json", timeout=120).stdout)
    assert result["resumed_bytes"] >= 3 * (1 << 20)
    assert result["fetched_bytes"] < size
    assert result["fetched_bytes"] + result["resumed_bytes"] == result["size"]
    assert result["size"] >= size  # the model's files: the weights and the tokenizer
    assert result["faulty_peers"] == {}
    assert puller.cli("models", "verify") == {EMBEDDER: []}
    assert installed(puller)[EMBEDDER]["sha256"] == installed(source)[EMBEDDER]["sha256"]
    assert not list((puller.home / "models").glob(".pull-*"))


def test_corrupt_chunks_are_fetched_again_elsewhere_and_the_sender_is_reported(
        swarm: Swarm, prepared_models: Path, tmp_path: Path) -> None:
    good = swarm.daemon("good", models=prepared_models).start("--threads", "1")
    bad = swarm.daemon("bad", models=prepared_models).start(
        "--threads", "1", "--bootstrap", good.addr, "--test-only-corrupt-chunks")
    puller = swarm.daemon("puller", models=empty_models(tmp_path, "puller")).start(
        "--bootstrap", good.addr, "--no-models")
    wait_for(lambda: advertises(puller, good.peer_id, EMBEDDER)
             and advertises(puller, bad.peer_id, EMBEDDER), 30, "both holders")
    swarm_rows = {row["name"]: row for row in puller.cli("models", "list", "--swarm")}
    assert set(swarm_rows[EMBEDDER]["peers"]) == {good.peer_id, bad.peer_id}
    result = json.loads(run_cli("models", "pull", EMBEDDER, "--home", str(puller.home),
                                "--json", timeout=120).stdout)
    assert set(result["faulty_peers"]) == {bad.peer_id}
    assert result["fetched_bytes"] == result["size"]
    assert puller.cli("models", "verify") == {EMBEDDER: []}
    assert installed(puller)[EMBEDDER] == installed(good)[EMBEDDER]
    assert puller.status()["rejected_input"]["bad_chunk"] == sum(
        result["faulty_peers"].values())
