"""What ``calinode ingest`` and ``POST /v1/ingest`` send on: documents read, checked, deduplicated.

Pure logic (files in, documents and per-document verdicts out), shared by the CLI (which
reads a folder, a single file or stdin) and the API route (which gets a list of documents), so
that both paths agree:

- **A ``_id`` given twice keeps the last** version (the README's "new content replaces old");
  the earlier lines are dropped and reported in ``duplicates`` (the ids) and
  ``duplicate_lines`` (how many lines were dropped). Sending both would make every replica
  refuse the whole shard write.
- **A single .txt/.md file is one document** (id: its file name), as each file of a folder is
  (id: its path inside the folder); anything else is JSONL (one ``{"_id", "text", ...}`` a line).
- **Text must decode**: a file that is not valid in the chosen encoding (UTF-8 unless
  ``--encoding``) is a per-file failure (``BAD_REQUEST: not UTF-8 ...``), never stored with
  replacement characters.
- **A document is at most** :data:`MAX_DOCUMENT_CHARS` characters of title and text; the node
  chunks it whatever its length up to there (a text longer than one ``embed_chunks`` request,
  ``protocol/job_params.MAX_TEXT_CHARS``, is embedded in pieces); a longer one is a
  per-document failure naming the maximum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from calinode.node.index.chunking import make_document_text
from calinode.protocol.errors import ConfigError

#: Longest document (title, a blank line and text, in characters) that ingest accepts; the
#: node chunks it. Longer documents fail one by one with a message naming this maximum. Its
#: chunks and their vectors must fit one write frame (``protocol/limits.py``: 32 MiB): 8
#: million characters of English make about 10 000 chunks, 15 MiB of 384-d vectors.
MAX_DOCUMENT_CHARS = 8_000_000
#: Most JSON bytes (UTF-8) of documents in one ingest request (the API takes 64 MiB): a
#: request of many documents stops before this; a larger document travels alone.
SEND_BYTES = 16 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_ENCODING = "utf-8"


@dataclass
class PreparedInput:
    """The documents to send, those refused before sending, and the ids given more than once."""

    docs: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    duplicate_lines: int = 0
    #: every document read (files and lines, failed ones included)
    read: int = 0


def failure(doc_id: Any, message: str) -> dict[str, Any]:
    return {"_id": doc_id, "error": "BAD_REQUEST", "message": message}


def decode_text(data: bytes, encoding: str) -> str:
    """``data`` decoded strictly; ``ValueError`` naming the first bad byte and the way out."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1].hex()
        name = "UTF-8" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
        raise ValueError(f"not {name} (byte 0x{bad} at offset {exc.start}); convert the file "
                         "or give its encoding: calinode ingest --encoding latin-1") from None
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None


def text_document(doc_id: str, title: str, data: bytes, encoding: str) -> dict[str, Any]:
    """One .txt/.md file as a document, or its failure."""
    try:
        return {"_id": doc_id, "title": title, "text": decode_text(data, encoding)}
    except ValueError as exc:
        return {"_id": doc_id, "_failure": str(exc)}


def jsonl_documents(lines: Iterable[bytes], name: str, encoding: str
                    ) -> Iterator[dict[str, Any]]:
    """One document per non-blank line; a line that is not a JSON object (or does not decode)
    refuses the whole input (``CONFIG``), naming the line."""

    def decoded() -> Iterator[str]:
        for number, raw in enumerate(lines, start=1):
            try:
                yield decode_text(raw, encoding)
            except ValueError as exc:
                raise ConfigError(f"{name}:{number}: {exc}") from None

    yield from json_objects(decoded(), name)


def json_objects(lines: Iterable[str], name: str) -> Iterator[dict[str, Any]]:
    """One JSON object per non-blank line of ``name`` (``CONFIG`` naming a line that is not)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{name}:{number}: not JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{name}:{number}: each line must be a JSON object")
        yield doc


def read_path(path: str, stdin: BinaryIO, encoding: str = DEFAULT_ENCODING
              ) -> list[dict[str, Any]]:
    """The documents of a folder of .txt/.md, a single .txt/.md file, a JSONL file or ``-``
    (JSONL on ``stdin``). A file that does not decode is a document carrying ``_failure``."""
    if path == "-":
        return list(jsonl_documents(stdin, "stdin", encoding))
    source = Path(path).expanduser()
    if source.is_dir():
        return [text_document(str(file.relative_to(source)), file.stem, file.read_bytes(),
                              encoding)
                for file in sorted(source.rglob("*"))
                if file.suffix.lower() in TEXT_SUFFIXES and file.is_file()]
    if not source.is_file():
        raise ConfigError(f"{source}: no such file or folder")
    if source.suffix.lower() in TEXT_SUFFIXES:
        return [text_document(source.name, source.stem, source.read_bytes(), encoding)]
    with source.open("rb") as fh:
        return list(jsonl_documents(fh, str(source), encoding))


def document_size(doc: dict[str, Any]) -> int | None:
    """Characters the node will chunk for ``doc`` (title and text), None when it has no text
    (the coordinator names that problem)."""
    text, title = doc.get("text"), doc.get("title")
    if not isinstance(text, str):
        return None
    return len(make_document_text(title if isinstance(title, str) else None, text))


def prepare(docs: Iterable[Any], *, read_failures: bool = False) -> PreparedInput:
    """Drop oversize documents (and with ``read_failures``, files :func:`read_path` could not
    decode), each a failure; then keep the last version of every ``_id`` given more than once
    (in the position of its last line)."""
    out = PreparedInput()
    last: dict[str, int] = {}  # id -> position of its latest version in candidates
    replaced: set[int] = set()  # positions of versions a later line replaced
    repeated: set[str] = set()
    candidates: list[Any] = []
    for doc in docs:
        out.read += 1
        if read_failures and isinstance(doc, dict) and "_failure" in doc:
            out.failed.append(failure(doc.get("_id"), str(doc["_failure"])))
            continue
        if isinstance(doc, dict):
            size = document_size(doc)
            if size is not None and size > MAX_DOCUMENT_CHARS:
                out.failed.append(failure(doc.get("_id"), (
                    f"the document has {size:,} characters, more than the maximum document "
                    f"size of {MAX_DOCUMENT_CHARS:,} (title and text; the node chunks any "
                    "document up to that size): split it into parts of at most that size")))
                continue
            doc_id = doc.get("_id")
            if isinstance(doc_id, str) and doc_id:
                if doc_id in last:
                    out.duplicate_lines += 1
                    replaced.add(last[doc_id])
                    if doc_id not in repeated:
                        repeated.add(doc_id)
                        out.duplicates.append(doc_id)
                last[doc_id] = len(candidates)
        candidates.append(doc)
    out.docs = [doc for position, doc in enumerate(candidates) if position not in replaced]
    return out


def send_batches(docs: list[Any], max_docs: int, max_bytes: int = SEND_BYTES
                 ) -> Iterator[list[Any]]:
    """``docs`` in order, cut into requests of at most ``max_docs`` documents and
    ``max_bytes`` of JSON (a larger document alone in its request)."""
    batch: list[Any] = []
    size = 0
    for doc in docs:
        doc_bytes = len(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        if batch and (len(batch) >= max_docs or size + doc_bytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += doc_bytes
    if batch:
        yield batch
