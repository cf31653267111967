"""Models by content address: the ``/calinode/blob/1.0.0`` protocol's typed, bounded views.

A *model blob* is a model's folder: every file its manifest lists (the weights first, then the
tokenizer and the like) plus the manifest itself (tokenizer, pooling, prefixes, dims, chat
template), so a pulled model behaves byte for byte like the original. It is named by the
model's identity, the sha256 of its primary file (what capability records advertise).

One request per stream, one reply, then both sides close::

    -> {"op": "manifest", "sha256": MODEL}
    <- {"ok": true, "manifest": TransferManifest}        # or an error reply
    -> {"op": "chunk", "sha256": MODEL, "file": F, "chunk": C}
    <- {"ok": true, "data": <bin, the chunk's bytes>}    # or an error reply
    <- {"ok": false, "code": "UNKNOWN_MODEL", "message": "..."}

A :class:`TransferManifest` lists each file's size, sha256 and the sha256 of each of its
``chunk_size`` chunks (the last one shorter), so a puller verifies every chunk as it arrives,
from whichever peer sent it, and each whole file before the model is installed. Its identity is
checked: the first file's sha256 is the model's, and the node checks the model manifest text
against the listed files (``node/blobs/``). Pure data and validation: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ErrorCode, JobError, RemoteProtocolError
from .validation import (
    SHA256,
    check_bytes,
    check_instance,
    check_int,
    check_str,
    from_peer,
    invalid,
)

__all__ = [
    "BLOB_PROTOCOL",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_FILES",
    "MAX_FILE_SIZE",
    "MAX_MANIFEST_TEXT",
    "MAX_TOTAL_CHUNKS",
    "MIN_CHUNK_SIZE",
    "BlobFile",
    "BlobRequest",
    "ChunkRequest",
    "ManifestRequest",
    "TransferManifest",
    "chunk_count",
    "error_reply",
    "parse_chunk_reply",
    "parse_manifest_reply",
    "parse_request",
]

BLOB_PROTOCOL: Final = "/calinode/blob/1.0.0"
_MIB: Final = 1024 * 1024
MIN_CHUNK_SIZE: Final = 1 * _MIB
MAX_CHUNK_SIZE: Final = 4 * _MIB
DEFAULT_CHUNK_SIZE: Final = 1 * _MIB
#: Files in one model (weights, tokenizer, configs): models use two or three.
MAX_FILES: Final = 16
#: Largest file of a model (16 GiB): well above the GGUF models calinode runs.
MAX_FILE_SIZE: Final = 16 * 1024 * _MIB
#: Chunks over all files (32 GiB at 1 MiB): bounds the manifest (64 hex chars per chunk).
MAX_TOTAL_CHUNKS: Final = 32_768
#: The model manifest's JSON text (``manifest.json``), in characters.
MAX_MANIFEST_TEXT: Final = 64 * 1024
MAX_MESSAGE: Final = 300
#: A file's path inside the model folder: at most four plain parts, no ``..``, no backslash.
_PART: Final = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
FILE_PATH: Final = re.compile(rf"{_PART}(/{_PART}){{0,3}}")
_REQUEST_KEYS: Final = {"manifest": {"op", "sha256"}, "chunk": {"op", "sha256", "file", "chunk"}}


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of a file of ``size`` bytes (an empty file has none)."""
    return -(-size // chunk_size)


@dataclass(frozen=True, kw_only=True, slots=True)
class ManifestRequest:
    """Ask a peer for the transfer manifest of the model ``sha256``."""

    sha256: str

    def __post_init__(self) -> None:
        check_str("sha256", self.sha256, max_len=64, pattern=SHA256)

    def to_wire(self) -> dict[str, Any]:
        return {"op": "manifest", "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True, slots=True)
class ChunkRequest:
    """Ask a peer for chunk ``chunk`` of file ``file`` (indexes into its manifest)."""

    sha256: str
    file: int
    chunk: int

    def __post_init__(self) -> None:
        check_str("sha256", self.sha256, max_len=64, pattern=SHA256)
        check_int("file", self.file, lo=0, hi=MAX_FILES - 1)
        check_int("chunk", self.chunk, lo=0, hi=MAX_TOTAL_CHUNKS - 1)

    def to_wire(self) -> dict[str, Any]:
        return {"op": "chunk", "sha256": self.sha256, "file": self.file, "chunk": self.chunk}


BlobRequest = ManifestRequest | ChunkRequest


def parse_request(obj: Mapping[str, Any]) -> BlobRequest:
    """A request map from a peer; ``RemoteProtocolError`` (``BAD_REQUEST``) when it does not
    fit exactly (unknown op, missing or extra keys, bad values)."""
    with from_peer():
        op = obj.get("op")
        keys = _REQUEST_KEYS.get(op) if isinstance(op, str) else None
        if keys is None:
            invalid(f"unknown blob op {op!r}")
        if set(obj) != keys:
            invalid(f"a {op} request has exactly the keys {sorted(keys)}")
        if op == "manifest":
            return ManifestRequest(sha256=obj["sha256"])
        return ChunkRequest(sha256=obj["sha256"], file=obj["file"], chunk=obj["chunk"])


@dataclass(frozen=True, kw_only=True, slots=True)
class BlobFile:
    """One file of a model blob: its path in the model folder, size, sha256, chunk sha256s."""

    path: str
    size: int
    sha256: str
    chunks: tuple[str, ...]

    def __post_init__(self) -> None:
        check_str("file path", self.path, max_len=520, pattern=FILE_PATH)
        if any(part in (".", "..") for part in self.path.split("/")):
            invalid(f"file path {self.path!r} may not hold . or .. parts")
        check_int("file size", self.size, lo=0, hi=MAX_FILE_SIZE)
        check_str("file sha256", self.sha256, max_len=64, pattern=SHA256)
        check_instance("chunks", self.chunks, tuple)
        if len(self.chunks) > MAX_TOTAL_CHUNKS:
            invalid(f"a file lists more than {MAX_TOTAL_CHUNKS} chunks")
        for digest in self.chunks:
            check_str("chunk sha256", digest, max_len=64, pattern=SHA256)

    def to_wire(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256,
                "chunks": list(self.chunks)}


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferManifest:
    """What a model blob is made of, and how to check every byte of it.

    ``sha256`` is the model's identity and must be ``files[0].sha256`` (the primary file);
    ``model`` is the model manifest's JSON text, installed as it came once the files check.
    """

    sha256: str
    chunk_size: int
    model: str
    files: tuple[BlobFile, ...]

    def __post_init__(self) -> None:
        check_str("sha256", self.sha256, max_len=64, pattern=SHA256)
        check_int("chunk_size", self.chunk_size, lo=MIN_CHUNK_SIZE, hi=MAX_CHUNK_SIZE)
        check_str("model manifest", self.model, max_len=MAX_MANIFEST_TEXT)
        check_instance("files", self.files, tuple)
        if not 1 <= len(self.files) <= MAX_FILES:
            invalid(f"a model blob has 1 to {MAX_FILES} files, not {len(self.files)}")
        if self.files[0].sha256 != self.sha256:
            invalid("the first file's sha256 is not the model's identity")
        if len({f.path for f in self.files}) != len(self.files):
            invalid("a model blob lists a file path twice")
        total = 0
        for item in self.files:
            expected = chunk_count(item.size, self.chunk_size)
            if len(item.chunks) != expected:
                invalid(f"{item.path}: {len(item.chunks)} chunk hashes for {expected} chunks")
            total += expected
        if total > MAX_TOTAL_CHUNKS:
            invalid(f"a model blob has more than {MAX_TOTAL_CHUNKS} chunks")

    @property
    def size(self) -> int:
        return sum(item.size for item in self.files)

    @property
    def total_chunks(self) -> int:
        return sum(len(item.chunks) for item in self.files)

    def chunk_length(self, file: int, chunk: int) -> int:
        """Bytes in chunk ``chunk`` of file ``file`` (``IndexError`` when out of range)."""
        item = self.files[file]
        if not 0 <= chunk < len(item.chunks):
            raise IndexError(chunk)
        return min(self.chunk_size, item.size - chunk * self.chunk_size)

    def to_wire(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "chunk_size": self.chunk_size, "model": self.model,
                "files": [item.to_wire() for item in self.files]}

    @classmethod
    def from_wire(cls, obj: object) -> TransferManifest:
        """The manifest map from a peer (``RemoteProtocolError`` when it does not fit)."""
        with from_peer():
            if not isinstance(obj, dict) or set(obj) != {"sha256", "chunk_size", "model",
                                                         "files"}:
                invalid("a transfer manifest has exactly sha256, chunk_size, model, files")
            files = obj["files"]
            if not isinstance(files, list) or len(files) > MAX_FILES:
                invalid(f"files must be a list of at most {MAX_FILES}")
            parsed = []
            for item in files:
                if not isinstance(item, dict) or set(item) != {"path", "size", "sha256",
                                                               "chunks"}:
                    invalid("a file has exactly path, size, sha256, chunks")
                chunks = item["chunks"]
                if not isinstance(chunks, list):
                    invalid("chunks must be a list")
                parsed.append(BlobFile(path=item["path"], size=item["size"],
                                       sha256=item["sha256"], chunks=tuple(chunks)))
            return cls(sha256=obj["sha256"], chunk_size=obj["chunk_size"], model=obj["model"],
                       files=tuple(parsed))


def error_reply(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code.value, "message": message[:MAX_MESSAGE]}


def _reply_body(obj: Mapping[str, Any], key: str) -> object:
    """The body of an ``ok`` reply; the peer's error as a ``JobError`` with its code."""
    ok = obj.get("ok")
    if ok is False:
        with from_peer():
            if set(obj) != {"ok", "code", "message"}:
                invalid("an error reply has exactly ok, code, message")
            check_str("message", obj["message"], max_len=MAX_MESSAGE, min_len=0)
            code = obj["code"]
            if code not in ErrorCode.__members__:
                invalid(f"unknown error code {code!r}")
        raise JobError(f"peer refused: {obj['message']}", code=ErrorCode(code))
    if ok is not True or set(obj) != {"ok", key}:
        raise RemoteProtocolError(f"a blob reply is {{ok: true, {key}}} or an error",
                                  code=ErrorCode.BAD_REQUEST)
    return obj[key]


def parse_manifest_reply(obj: Mapping[str, Any], sha256: str) -> TransferManifest:
    """The reply to a :class:`ManifestRequest` for ``sha256``: the manifest, checked to be for
    that model (``RemoteProtocolError``), or the peer's refusal (``JobError``)."""
    manifest = TransferManifest.from_wire(_reply_body(obj, "manifest"))
    if manifest.sha256 != sha256:
        raise RemoteProtocolError("the peer sent the manifest of another model",
                                  code=ErrorCode.BAD_REQUEST)
    return manifest


def parse_chunk_reply(obj: Mapping[str, Any], length: int) -> bytes:
    """The reply to a :class:`ChunkRequest`: exactly ``length`` bytes (its hash is the
    caller's check), or the peer's refusal (``JobError``)."""
    data = _reply_body(obj, "data")
    with from_peer():
        check_bytes("chunk data", data, max_len=length, min_len=length)
    assert isinstance(data, bytes)
    return data
