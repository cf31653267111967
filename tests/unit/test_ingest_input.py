"""node/ingest_input.py: what ingest sends on, and what it refuses before sending."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from calinode.node.ingest_input import MAX_DOCUMENT_CHARS, prepare, read_path
from calinode.protocol.errors import ConfigError


def test_a_repeated_id_keeps_its_last_version_and_is_reported() -> None:
    docs = [{"_id": "a", "text": "one"}, {"_id": "b", "text": "bee"},
            {"_id": "a", "text": "two"}, {"_id": "a", "text": "three"}]
    out = prepare(docs)
    assert out.docs == [{"_id": "b", "text": "bee"}, {"_id": "a", "text": "three"}]
    assert out.duplicates == ["a"]
    assert out.duplicate_lines == 2
    assert out.read == 4 and out.failed == []


def test_documents_without_a_usable_id_pass_to_the_coordinator() -> None:
    docs = [{"text": "x"}, {"_id": 3, "text": "y"}, "not a map"]
    assert prepare(docs).docs == docs


def test_a_document_above_the_maximum_fails_alone_naming_it() -> None:
    docs = [{"_id": "big", "text": "x" * MAX_DOCUMENT_CHARS, "title": "t"},
            {"_id": "fits", "text": "x" * MAX_DOCUMENT_CHARS}]
    out = prepare(docs)
    assert [d["_id"] for d in out.docs] == ["fits"]
    assert out.failed[0]["_id"] == "big" and out.failed[0]["error"] == "BAD_REQUEST"
    assert f"{MAX_DOCUMENT_CHARS:,}" in out.failed[0]["message"]


def test_a_single_text_file_is_one_document(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Notes\n{not json}\n")
    assert read_path(str(tmp_path / "notes.md"), io.BytesIO()) == [
        {"_id": "notes.md", "title": "notes", "text": "# Notes\n{not json}\n"}]


def test_an_undecodable_file_fails_and_is_never_altered(tmp_path: Path) -> None:
    (tmp_path / "lat.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "ok.txt").write_text("fine")
    read = read_path(str(tmp_path), io.BytesIO())
    out = prepare(read, read_failures=True)
    assert [d["_id"] for d in out.docs] == ["ok.txt"]
    assert out.failed[0]["_id"] == "lat.txt"
    assert out.failed[0]["message"].startswith("not UTF-8 (byte 0xe9 at offset 3)")
    latin = read_path(str(tmp_path), io.BytesIO(), "latin-1")
    assert latin[0]["text"] == "café\n"


def test_api_documents_cannot_forge_a_read_failure() -> None:
    docs = [{"_id": "x", "text": "t", "_failure": "metadata"}]
    assert prepare(docs).docs == docs


def test_jsonl_from_stdin_and_its_errors_name_the_line(tmp_path: Path) -> None:
    stdin = io.BytesIO(b'{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": "y"}\n')
    assert [d["_id"] for d in read_path("-", stdin)] == ["a", "b"]
    with pytest.raises(ConfigError, match=r"stdin:2: not UTF-8"):
        read_path("-", io.BytesIO(b'{"_id": "a", "text": "x"}\n"\xff"\n'))
    (tmp_path / "d.jsonl").write_text("[1]\n")
    with pytest.raises(ConfigError, match=r"d.jsonl:1: each line must be a JSON object"):
        read_path(str(tmp_path / "d.jsonl"), io.BytesIO())
