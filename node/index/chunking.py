"""Token-aware chunking of documents, with overlap, and document identity. Pure functions.

The caller tokenizes (a ``tokenizers`` encoding *without* special tokens) and passes the
character offsets of the tokens; this module only decides where chunks start and end, so it
never loads a model and never round-trips text through a tokenizer.

The rules of :func:`chunk_text` (``n`` tokens, window ``max_tokens``, ``overlap``):

1. Blank text gives no chunk. A text of at most ``max_tokens`` tokens is one chunk: index 0,
   the whole text stripped of surrounding whitespace.
2. Otherwise chunks are windows of consecutive tokens. A window starts at token ``s`` and
   ends (exclusively) at ``s + max_tokens`` at the latest. When that is not the end of the
   text, the window is cut at the *last* token ``j`` that ends a sentence (its text ends with
   ``.``, ``!`` or ``?`` and whitespace follows it) among the tokens that leave the chunk at
   least ``max_tokens - max_tokens // 5`` tokens long (the last 20 % of the window); failing
   that, at the last token followed by whitespace (so a word split into sub-word pieces is not
   cut in two) in the same range; failing that, after ``max_tokens`` tokens.
3. The next window starts ``overlap`` tokens before the previous one ended. The overlap is
   therefore *exact everywhere*, including after a sentence-boundary cut: such a cut shortens
   the chunk, never the overlap (the next chunk starts with the tail of the sentence that was
   just closed, which is useful context). Every window adds at least one new token, because a
   chunk always has more than ``max_tokens // 2 > overlap`` tokens.
4. A chunk's text is the original substring from its first token's start to its last token's
   end, and ``Chunk.start``/``Chunk.end`` are those character offsets: for every chunk,
   ``text[chunk.start:chunk.end] == chunk.text``.

A chunk may begin inside a word (the overlap counts tokens, not words): re-tokenizing its text
can then differ from the original pieces by a token or so. Callers size ``max_tokens`` with
the model's limit minus its special tokens and a small margin.

A document longer than one ``embed_chunks`` request may carry is first cut by
:func:`text_pieces` into pieces of at most ``max_chars`` characters, each cut at a paragraph,
sentence or word boundary near its end; each piece is chunked as above and the chunks' offsets
are moved by the piece's offset. A piece boundary therefore also ends a chunk (no chunk spans
two pieces, and there is no overlap across that one boundary).

Document identity for idempotent ingest: ``make_document_text`` (node/ingest_input.py, where
the command line may use it too) is what gets chunked and embedded (the BEIR convention:
title, blank line, text), and :func:`content_hash` says whether a re-ingested document changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MIN_MAX_TOKENS",
    "Chunk",
    "chunk_text",
    "content_hash",
    "text_pieces",
    "token_windows",
]

#: The smallest accepted window: fewer tokens than this cannot carry an overlap and a sentence.
MIN_MAX_TOKENS = 8

_SENTENCE_END = (".", "!", "?")
#: Keys of a BEIR corpus record that are not metadata.
_RECORD_KEYS = frozenset({"_id", "title", "text", "metadata"})


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: its position, its text and where that text sits (characters)."""

    index: int
    text: str
    start: int
    end: int


def _validate(text: str, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int) -> None:
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be >= {MIN_MAX_TOKENS}, got {max_tokens}")
    if not 0 <= overlap < max_tokens // 2:
        raise ValueError(f"overlap must be in 0..{max_tokens // 2 - 1}, got {overlap}")
    previous = (0, 0)
    for i, (start, end) in enumerate(offsets):
        if not 0 <= start <= end <= len(text):
            raise ValueError(f"token {i} has offsets {(start, end)} outside the text")
        if start < previous[0] or end < previous[1]:
            raise ValueError(f"token {i} has offsets {(start, end)} before token {i - 1}'s")
        previous = (start, end)


def _ends_sentence(text: str, start: int, end: int) -> bool:
    return (
        end > start
        and text[start:end].endswith(_SENTENCE_END)
        and (end == len(text) or text[end].isspace())
    )


def _followed_by_space(text: str, end: int) -> bool:
    return end == len(text) or text[end].isspace()


def _cut(
    text: str, offsets: Sequence[tuple[int, int]], first: int, limit: int, shortest: int
) -> int:
    """The exclusive end of the window starting at ``first`` that may not pass ``limit``."""
    candidates = range(limit - 1, first + shortest - 2, -1)  # last token j, latest first
    for j in candidates:
        if _ends_sentence(text, *offsets[j]):
            return j + 1
    for j in candidates:
        if _followed_by_space(text, offsets[j][1]):
            return j + 1
    return limit


def token_windows(
    text: str, offsets: Sequence[tuple[int, int]], *, max_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    """The ``(first, end)`` token ranges (end exclusive) of the chunks of :func:`chunk_text`.

    Useful to a caller that wants the token ids of each chunk without tokenizing again.
    Raises ValueError on bad parameters or offsets that are out of the text or out of order.
    """
    _validate(text, offsets, max_tokens, overlap)
    count = len(offsets)
    if count == 0:
        return []
    if count <= max_tokens:
        return [(0, count)]
    shortest = max_tokens - max_tokens // 5
    windows: list[tuple[int, int]] = []
    first = 0
    while True:
        limit = first + max_tokens
        if limit >= count:
            windows.append((first, count))
            return windows
        end = _cut(text, offsets, first, limit, shortest)
        windows.append((first, end))
        first = end - overlap


def chunk_text(
    text: str, *, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int
) -> list[Chunk]:
    """Chunks of at most ``max_tokens`` tokens, consecutive ones sharing ``overlap`` tokens.

    ``offsets`` are the ``(start, end)`` character offsets of the tokens of ``text`` (an
    encoding without special tokens). See the module docstring for the rules.
    """
    windows = token_windows(text, offsets, max_tokens=max_tokens, overlap=overlap)
    stripped = text.strip()
    if not stripped:
        return []
    if len(windows) <= 1:
        start = len(text) - len(text.lstrip())
        return [Chunk(0, stripped, start, start + len(stripped))]
    chunks: list[Chunk] = []
    for index, (first, end) in enumerate(windows):
        start, stop = offsets[first][0], offsets[end - 1][1]
        chunks.append(Chunk(index, text[start:stop], start, stop))
    return chunks


def _metadata_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    extra = {key: value for key, value in doc.items() if key not in _RECORD_KEYS}
    nested = doc.get("metadata")
    if nested is None:
        return extra
    if not isinstance(nested, Mapping):
        raise ValueError(f"metadata must be an object, got {type(nested).__name__}")
    overlap = extra.keys() & nested.keys()
    if overlap:
        raise ValueError(f"metadata keys given twice: {sorted(overlap)}")
    return {**extra, **nested}


def content_hash(doc: Mapping[str, Any]) -> str:
    """The sha256 (hex) of a document's content: title, text and metadata, not its id.

    ``doc`` is a BEIR corpus record: ``{"_id", "title", "text", ...metadata}``; metadata is
    every other key, plus the entries of a nested ``"metadata"`` object if there is one (a key
    in both places is an error). A missing title equals ``None`` and ``""``; missing metadata
    equals ``{}``. The hash is over canonical JSON (sorted keys, no spaces, UTF-8, no NaN), so
    it does not depend on key order or on the machine. Raises ValueError for values JSON
    cannot encode.
    """
    text = doc.get("text")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    title = doc.get("title") or ""
    if not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    payload = {"title": title, "text": text, "metadata": _metadata_of(doc)}
    try:
        canonical = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"document content is not JSON: {exc}") from exc
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


#: Where a long text is preferably cut into pieces, best first: a paragraph, a line, a
#: sentence, a word.
_PIECE_BREAKS = ("\n\n", "\n", ". ", " ")


def text_pieces(text: str, max_chars: int) -> list[tuple[int, str]]:
    """``text`` cut into ``(offset, piece)`` of at most ``max_chars`` characters each, with
    ``text[offset:offset + len(piece)] == piece`` and the pieces covering the text in order.

    Each cut falls after the last paragraph break, else line break, else sentence end, else
    space in the last fifth of the window, else exactly at ``max_chars`` (a text without
    spaces). Pieces that are only whitespace are left out: they carry no chunk."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces: list[tuple[int, str]] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            low = start + max_chars - max_chars // 5
            for mark in _PIECE_BREAKS:
                at = text.rfind(mark, low, end)
                if at >= 0:
                    end = at + len(mark)
                    break
        if text[start:end].strip():
            pieces.append((start, text[start:end]))
        start = end
    return pieces
