"""``calinode search``: a partial answer is loud (one warning line naming the missing shards,
exit status EXIT_PARTIAL) unless ``--allow-partial``; ``--per-doc`` and ``--no-text`` reach
the client. The client here is a fake standing in for the node's API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from calinode.node.cli.main import build_parser
from calinode.node.cli.rag import cmd_search
from calinode.protocol.errors import EXIT_PARTIAL


class FakeSearchClient:
    """Answers every query with one hit; shards 3 and 9 missing when ``partial``."""

    def __init__(self, partial: bool) -> None:
        self.partial, self.calls = partial, []

    def search(self, collection: str, query: str | None = None, *,
               queries: list[dict[str, Any]] | None = None, **options: Any
               ) -> list[dict[str, Any]]:
        self.calls.append({"query": query, "queries": queries, **options})
        count = 1 if queries is None else len(queries)
        return [{"query_id": str(i), "hits": [{"doc_id": "d", "chunk": 0, "score": 0.5,
                                                "text": "t"}],
                 "partial": self.partial, "missing_shards": [3, 9] if self.partial else []}
                for i in range(count)]


def run(argv: list[str], client: FakeSearchClient) -> int:
    return cmd_search(build_parser().parse_args(["search", "--collection", "c", *argv]), client)


def test_partial_answers_warn_once_and_exit_with_their_own_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["a query"], FakeSearchClient(partial=True)) == EXIT_PARTIAL
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["calinode: warning: partial answer (1 of 1): no live replica of shards [3, 9]"]
    assert run(["a query", "--allow-partial"], FakeSearchClient(partial=True)) == 0
    assert run(["a query"], FakeSearchClient(partial=False)) == 0
    assert capsys.readouterr().err.count("warning") == 1  # only the --allow-partial run

    file = tmp_path / "q.jsonl"
    file.write_text("".join(json.dumps({"_id": str(i), "text": f"q{i}"}) + "\n"
                            for i in range(300)))
    client = FakeSearchClient(partial=True)
    assert run(["--queries", str(file), "-k", "1000", "--per-doc", "--no-text", "--json"],
               client) == EXIT_PARTIAL
    assert len(client.calls) == 1 and len(client.calls[0]["queries"]) == 300  # one request
    assert client.calls[0]["per_doc"] and client.calls[0]["text"] is False
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 300 and len(err.strip().splitlines()) == 1


def test_search_help_documents_the_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    assert f"{EXIT_PARTIAL} when an answer is partial" in capsys.readouterr().out
