"""protocol/blobs.py: the typed, bounded views of ``/calinode/blob/1.0.0`` messages."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from calinode.protocol.blobs import (
    MAX_CHUNK_SIZE,
    MAX_FILES,
    MIN_CHUNK_SIZE,
    BlobFile,
    ChunkRequest,
    ManifestRequest,
    TransferManifest,
    chunk_count,
    error_reply,
    parse_chunk_reply,
    parse_manifest_reply,
    parse_request,
)
from calinode.protocol.errors import ErrorCode, JobError, RemoteProtocolError

SHA = "ab" * 32
H = "cd" * 32


def transfer(size: int = 2 * MIN_CHUNK_SIZE + 5, chunk_size: int = MIN_CHUNK_SIZE,
             **overrides: Any) -> dict[str, Any]:
    wire = {"sha256": SHA, "chunk_size": chunk_size, "model": "{}",
            "files": [{"path": "model.gguf", "size": size, "sha256": SHA,
                       "chunks": [H] * chunk_count(size, chunk_size)},
                      {"path": "tok/tokenizer.json", "size": 10, "sha256": H,
                       "chunks": [H]}]}
    wire.update(overrides)
    return wire


def test_requests_round_trip_and_refuse_anything_else() -> None:
    for request in (ManifestRequest(sha256=SHA), ChunkRequest(sha256=SHA, file=1, chunk=7)):
        assert parse_request(request.to_wire()) == request
    for bad in ({"op": "manifest"}, {"op": "manifest", "sha256": SHA.upper()},
                {"op": "manifest", "sha256": SHA, "x": 1}, {"op": "chunk", "sha256": SHA},
                {"op": "chunk", "sha256": SHA, "file": MAX_FILES, "chunk": 0},
                {"op": "chunk", "sha256": SHA, "file": 0, "chunk": -1},
                {"op": "chunk", "sha256": SHA, "file": True, "chunk": 0},
                {"op": "chunk", "sha256": SHA, "file": 0, "chunk": 2**40},
                {"op": ["chunk"], "sha256": SHA}, {}, {"op": "delete", "sha256": SHA}):
        with pytest.raises(RemoteProtocolError) as info:
            parse_request(bad)
        assert info.value.code == ErrorCode.BAD_REQUEST


def test_a_transfer_manifest_round_trips_and_knows_its_chunks() -> None:
    manifest = parse_manifest_reply({"ok": True, "manifest": transfer()}, SHA)
    assert TransferManifest.from_wire(manifest.to_wire()) == manifest
    assert manifest.total_chunks == 4
    assert manifest.size == 2 * MIN_CHUNK_SIZE + 15
    assert [manifest.chunk_length(0, c) for c in range(3)] == [MIN_CHUNK_SIZE] * 2 + [5]
    assert manifest.chunk_length(1, 0) == 10
    with pytest.raises(IndexError):
        manifest.chunk_length(0, 3)


@pytest.mark.parametrize("change", [
    {"chunk_size": MIN_CHUNK_SIZE - 1}, {"chunk_size": MAX_CHUNK_SIZE + 1},
    {"chunk_size": True}, {"sha256": H}, {"model": "x" * (64 * 1024 + 1)}, {"files": []},
    {"files": [transfer()["files"][0]] * 2},
    {"files": [dict(transfer()["files"][0], chunks=[H])]},           # too few chunk hashes
    {"files": [dict(transfer()["files"][0], path="../etc/passwd")]},
    {"files": [dict(transfer()["files"][0], path="/abs")]},
    {"files": [dict(transfer()["files"][0], path="a\\b")]},
    {"files": [dict(transfer()["files"][0], size=-1)]},
    {"files": [dict(transfer()["files"][0], size=2**40, chunks=[])]},
    {"files": [dict(transfer()["files"][0], chunks=["zz"] * 3)]},
    {"files": [dict(transfer()["files"][0], extra=1)]},
    {"files": [transfer()["files"][0]] + [dict(transfer()["files"][1], path=f"f{i}")
                                          for i in range(MAX_FILES)]},
    {"extra": 1},
])
def test_a_transfer_manifest_out_of_bounds_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_manifest_reply({"ok": True, "manifest": transfer(**change)}, SHA)


def test_the_manifest_of_another_model_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_manifest_reply({"ok": True, "manifest": transfer()}, H)


def test_error_replies_carry_the_peers_code_and_bad_ones_are_refused() -> None:
    with pytest.raises(JobError) as info:
        parse_manifest_reply(error_reply(ErrorCode.UNKNOWN_MODEL, "no"), SHA)
    assert info.value.code == ErrorCode.UNKNOWN_MODEL
    for bad in ({"ok": False, "code": "NOPE", "message": ""},
                {"ok": False, "code": "OVERLOADED"}, {"ok": 1, "data": b""}, {},
                {"ok": True, "data": b"x", "more": 1}):
        with pytest.raises((RemoteProtocolError, JobError)) as caught:
            parse_chunk_reply(bad, 1)
        assert isinstance(caught.value, RemoteProtocolError) or bad.get("ok") is False


def test_a_chunk_reply_must_have_exactly_the_chunks_length() -> None:
    data = b"x" * 10
    assert parse_chunk_reply({"ok": True, "data": data}, 10) == data
    for wrong in (b"x" * 9, b"x" * 11, "x" * 10):
        with pytest.raises(RemoteProtocolError):
            parse_chunk_reply({"ok": True, "data": wrong}, 10)


def test_blob_file_checks_its_own_fields() -> None:
    item = BlobFile(path="model.onnx", size=3, sha256=hashlib.sha256(b"abc").hexdigest(),
                    chunks=(H,))
    assert item.to_wire()["chunks"] == [H]
    assert chunk_count(0, MIN_CHUNK_SIZE) == 0
    assert chunk_count(MIN_CHUNK_SIZE, MIN_CHUNK_SIZE) == 1
    assert chunk_count(MIN_CHUNK_SIZE + 1, MIN_CHUNK_SIZE) == 2
