"""Tables and progress of the command (node/cli/render.py): ``rich`` at a terminal, the same
plain lines as before for a pipe or a file."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from calinode.node.cli.main import PEER_COLUMNS, main, peer_cells
from calinode.node.cli.models import MODEL_COLUMNS, NO_MODELS, model_cells
from calinode.node.cli.rag import SHARD_COLUMNS, shard_cells
from calinode.node.cli.render import IngestProgress, plain_lines, print_table, progress_line

PEER = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def peer_row(**extra: Any) -> dict[str, Any]:
    return {"peer_id": PEER, "self": False, "alive": True, "last_seen": 0.25, "rtt_ms": 1.26,
            "load": {"in_flight": 3}, "addrs": ["/ip4/127.0.0.1/tcp/7411"],
            "capabilities": {"embed": [{"name": "minilm"}], "index": True}, **extra}


def test_peers_plain_lines_are_the_old_fixed_width_lines() -> None:
    rows = [peer_row(), peer_row(self=True, rtt_ms=None, addrs=[], alive=False,
                                 capabilities={})]
    lines = plain_lines(PEER_COLUMNS, [peer_cells(r) for r in rows])
    assert lines == [
        f"{'PEER ID':<54} {'ALIVE':<6} {'SEEN':>7} {'RTT ms':>7} {'JOBS':>5}  "
        f"{'ADDRESS':<46}  CAPABILITIES",
        f"{PEER:<54} {'yes':<6} {'0.2s':>7} {'1.3':>7} {3:>5}  "
        f"{'/ip4/127.0.0.1/tcp/7411':<46}  embed:minilm index",
        f"{PEER:<54} {'DEAD':<6} {'self':>7} {'-':>7} {3:>5}  {'-':<46}  -"]


def test_models_plain_lines_and_the_empty_listing() -> None:
    row = {"name": "minilm-l6-int8", "kind": "embed", "size": 23_456_789, "sha256": "ab" * 32}
    assert plain_lines(MODEL_COLUMNS, [model_cells(row)]) == [
        f"{'NAME':<20} {'KIND':<9} {'SIZE MB':>8}  SHA256",
        f"{'minilm-l6-int8':<20} {'embed':<9} {23.456789:>8.1f}  {'ab' * 8}"]
    out = io.StringIO()
    print_table(MODEL_COLUMNS, [], empty=NO_MODELS, file=out)
    assert out.getvalue() == f"{'NAME':<20} {'KIND':<9} {'SIZE MB':>8}  SHA256\n{NO_MODELS}\n"


def test_shards_plain_lines_have_no_heading() -> None:
    row = {"collection": "papers", "shard": 3, "live_replicas": 2, "wanted": 2,
           "replicas": [{"peer": "x" * 40 + "1a2b3c4d", "docs": 120, "healthy": True},
                        {"peer": "y" * 40 + "5e6f7a8b", "docs": None, "healthy": False}]}
    out = io.StringIO()
    print_table(SHARD_COLUMNS, [shard_cells(row)], header=False, file=out)
    assert out.getvalue() == "papers/3   2/2 replicas  1a2b3c4d:120, 5e6f7a8b:None!\n"


def test_a_terminal_gets_a_rich_table_with_every_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    out = Terminal()
    print_table(PEER_COLUMNS, [peer_cells(peer_row())], file=out)
    text = out.getvalue()
    assert "PEER ID" in text and "CAPABILITIES" in text and "embed:minilm index" in text
    assert PEER in text
    assert text != "\n".join(plain_lines(PEER_COLUMNS, [peer_cells(peer_row())])) + "\n"


def test_progress_off_a_terminal_is_one_plain_line_a_batch() -> None:
    out = io.StringIO()
    with IngestProgress(512, quiet=False, file=out) as progress:
        progress.update(256, 300)
        progress.update(512, 610)
    lines = out.getvalue().splitlines()
    assert [line.rsplit(",", 1)[0] for line in lines] == [
        "ingest: 256/512 docs, 300 chunks", "ingest: 512/512 docs, 610 chunks"]
    assert "\r" not in out.getvalue()
    assert progress_line(1, 2, 3, 4.26) == "ingest: 1/2 docs, 3 chunks, 4.3 s"


def test_progress_with_json_prints_nothing() -> None:
    for out in (io.StringIO(), Terminal()):
        with IngestProgress(10, quiet=True, file=out) as progress:
            progress.update(10, 20)
        assert out.getvalue() == ""


def test_progress_at_a_terminal_is_richs_bar() -> None:
    out = Terminal()
    with IngestProgress(4, quiet=False, file=out) as progress:
        progress.update(4, 9)
    text = out.getvalue()
    assert "4/4" in text and "9 chunks" in text and "ingest:" not in text


def test_models_list_off_a_terminal_prints_the_old_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["models", "list", "--home", str(tmp_path)],
                 ["models", "--home", str(tmp_path), "list"]):
        assert main(argv) == 0
        assert capsys.readouterr().out == (
            f"{'NAME':<20} {'KIND':<9} {'SIZE MB':>8}  SHA256\n{NO_MODELS}\n")
    assert main(["models", "list", "--home", str(tmp_path), "--json"]) == 0
    assert capsys.readouterr().out == "[]\n"
