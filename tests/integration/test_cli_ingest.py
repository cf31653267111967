"""The real ``calinode`` binary against one real daemon started with ``--index``: ``ingest``
summaries and exit statuses (mixed good/bad input, repeated ids, a single .md file, a latin-1
file, a document above the maximum), ``POST /v1/ingest`` with a repeated id, ``delete``
twice, ``collections info`` and conflicting flags."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calinode.node.ingest_input import MAX_DOCUMENT_CHARS
from calinode.protocol.errors import EXIT_DOCS_FAILED, EXIT_USAGE
from daemon_harness import Daemon, free_port, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[Daemon]:
    daemon = Daemon("n0", tmp_path_factory.mktemp("ingest") / "n0", free_port(),
                    models=prepared_models)
    daemon.start("--index", "--threads", "1")
    try:
        run_cli("collections", "create", "c", "--replicas", "1", "--shards", "2",
                "--home", str(daemon.home))
        yield daemon
    finally:
        daemon.kill()


def cli(node: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--home", str(node.home), check=False)


def ingest(node: Daemon, path: Path, *flags: str) -> tuple[int, dict[str, Any], str]:
    proc = cli(node, "ingest", str(path), "--collection", "c", "--json", *flags)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def jsonl(path: Path, docs: list[Any]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def search_ids(node: Daemon, query: str) -> dict[str, str]:
    proc = cli(node, "search", query, "--collection", "c", "--json", "-k", "50")
    assert proc.returncode == 0, proc.stderr
    return {h["doc_id"]: h["text"] for h in json.loads(proc.stdout)["hits"]}


def test_mixed_input_exits_9_and_lists_the_failures(node: Daemon, tmp_path: Path) -> None:
    status, summary, stderr = ingest(node, jsonl(tmp_path / "mixed.jsonl", [
        {"_id": "m1", "text": "a good document about rivers"},
        {"_id": "", "text": "no id"},
        {"_id": "m2", "text": "   "},
        {"_id": "m3", "text": "another good one"}]))
    assert status == EXIT_DOCS_FAILED, stderr
    assert summary["documents"] == 4 and summary["acknowledged"] == 2
    assert summary["added"] == 2
    assert sorted(str(f["_id"]) for f in summary["failed"]) == ["", "m2"]
    assert "2 of 4 documents failed (BAD_REQUEST)" in stderr
    status, summary, _ = ingest(node, jsonl(tmp_path / "good.jsonl", [
        {"_id": "g1", "text": "all good"}]))
    assert status == 0 and summary["failed"] == [] and summary["added"] == 1


def test_a_repeated_id_keeps_the_last_line_and_says_so(node: Daemon, tmp_path: Path) -> None:
    status, summary, stderr = ingest(node, jsonl(tmp_path / "dup.jsonl", [
        {"_id": "d1", "text": "first version of the lighthouse note"},
        {"_id": "d2", "text": "an unrelated note"},
        {"_id": "d1", "text": "second version of the lighthouse note"}]))
    assert status == 0, stderr
    assert summary["duplicates"] == ["d1"] and summary["duplicate_lines"] == 1
    assert summary["acknowledged"] == 2 and summary["failed"] == []
    assert search_ids(node, "lighthouse note")["d1"].startswith("second version")
    text = cli(node, "ingest", str(tmp_path / "dup.jsonl"), "--collection", "c").stdout
    assert "replaced by a later line with the same _id (the last one wins): d1" in text


def test_the_api_keeps_the_last_version_of_a_repeated_id(node: Daemon) -> None:
    reply = httpx.post(f"http://{node.info['api']}/v1/ingest", headers=node.auth, timeout=120,
                       json={"collection": "c", "docs": [
                           {"_id": "api1", "text": "old harbour text"},
                           {"_id": "api1", "text": "new harbour text"}]})
    assert reply.status_code == 200, reply.text
    summary = reply.json()
    assert summary["duplicates"] == ["api1"] and summary["failed"] == []
    assert summary["acknowledged"] == 1 and summary["documents"] == 2
    assert search_ids(node, "harbour text")["api1"] == "new harbour text"


def test_a_single_markdown_file_is_one_document(node: Daemon, tmp_path: Path) -> None:
    note = tmp_path / "field-notes.md"
    note.write_text("# Field notes\n\nOwls hunt at dusk over the meadow.\n")
    status, summary, stderr = ingest(node, note)
    assert status == 0, stderr
    assert summary["documents"] == 1 and summary["acknowledged"] == 1
    assert "field-notes.md" in search_ids(node, "owls hunting at dusk")


def test_a_latin1_file_fails_unless_its_encoding_is_given(node: Daemon, tmp_path: Path
                                                          ) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "cafe.txt").write_bytes("Le café ferme à midi.\n".encode("latin-1"))
    (folder / "plain.txt").write_text("plain ascii text")
    status, summary, stderr = ingest(node, folder)
    assert status == EXIT_DOCS_FAILED, stderr
    assert [f["_id"] for f in summary["failed"]] == ["cafe.txt"]
    assert summary["failed"][0]["message"].startswith("not UTF-8")
    assert summary["acknowledged"] == 1
    assert "cafe.txt" not in search_ids(node, "café ferme")
    status, summary, stderr = ingest(node, folder, "--encoding", "latin-1")
    assert status == 0, stderr
    assert search_ids(node, "café ferme à midi")["cafe.txt"].endswith("Le café ferme à midi.")


def test_a_document_above_the_maximum_fails_naming_it(node: Daemon, tmp_path: Path) -> None:
    status, summary, _ = ingest(node, jsonl(tmp_path / "big.jsonl", [
        {"_id": "big", "text": "word " * (MAX_DOCUMENT_CHARS // 5 + 1)},
        {"_id": "small", "text": "a small document"}]))
    assert status == EXIT_DOCS_FAILED
    assert [f["_id"] for f in summary["failed"]] == ["big"]
    assert f"maximum document size of {MAX_DOCUMENT_CHARS:,}" in summary["failed"][0]["message"]
    assert summary["acknowledged"] == 1


def test_a_document_longer_than_one_embed_request_is_chunked_whole(
        node: Daemon, tmp_path: Path) -> None:
    """250 000 characters: two pieces embedded separately (``MAX_TEXT_CHARS`` is 200 000),
    their chunks one document whose offsets point into the whole text."""
    animals = ["otter", "heron", "badger", "lynx", "marten", "beaver", "stoat"]
    sentences = [f"Section {i} describes the {animals[i % 7]} living near river "
                 f"{i * 7919 % 1000}. " for i in range(4_400)]
    sentences[4_200] = "The zeppelin landed on the glacier at dawn. "
    text = "".join(sentences)
    assert 200_000 < len(text) < 400_000 and text.index("zeppelin") > 200_000
    status, summary, stderr = ingest(node, jsonl(tmp_path / "long.jsonl",
                                                 [{"_id": "long", "text": text}]))
    assert status == 0, stderr
    assert summary["acknowledged"] == 1 and summary["chunks"] > 250
    proc = cli(node, "search", "zeppelin landed on the glacier", "--collection", "c",
               "--json", "-k", "3")
    hit = json.loads(proc.stdout)["hits"][0]
    assert hit["doc_id"] == "long" and "zeppelin" in hit["text"]
    meta = hit["metadata"]
    assert text[meta["start"]:meta["end"]] == hit["text"]
    assert meta["position"] > summary["chunks"] // 2


def test_delete_twice_says_not_found_the_second_time(node: Daemon, tmp_path: Path) -> None:
    ingest(node, jsonl(tmp_path / "del.jsonl", [{"_id": "gone", "text": "to be deleted"}]))
    first = cli(node, "delete", "gone", "never-there", "--collection", "c", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["deleted"] == ["gone"]
    assert json.loads(first.stdout)["not_found"] == ["never-there"]
    second = cli(node, "delete", "gone", "--collection", "c")
    assert second.returncode == 0, second.stderr
    assert "deleted 0, not found 1" in second.stdout and "gone: not found" in second.stdout


def test_collections_info_is_readable_and_json_on_request(node: Daemon) -> None:
    text = cli(node, "collections", "info", "c").stdout
    assert text.startswith("c (version 1)")
    assert "write quorum: 1 (a majority)" in text and "write_quorum" not in text
    data = json.loads(cli(node, "collections", "info", "c", "--json").stdout)
    assert data["quorum"] == 1 and data["name"] == "c"
    assert data["quorum_rule"] == "majority" and "write_quorum" not in data


@pytest.mark.parametrize("args", [
    ("search", "x", "--queries", "q.jsonl", "--collection", "c"),
    ("start", "--embed-model", "minilm-l6-int8", "--no-models"),
    ("start", "--gen-model", "smollm2-135m", "--no-models"),
])
def test_conflicting_flags_are_one_bad_request_line(node: Daemon, tmp_path: Path,
                                                    args: tuple[str, ...]) -> None:
    (tmp_path / "q.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    home = node.home if args[0] == "search" else tmp_path / "home"
    argv = [str(tmp_path / a) if a == "q.jsonl" else a for a in args]
    proc = run_cli(*argv, "--home", str(home), check=False, timeout=120)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("calinode: error: BAD_REQUEST: ")
