"""OnnxEmbedder on the prepared MiniLM models: correctness, bucketing, prefixes, bad input."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from calinode.models.embedder import InputType, OnnxEmbedder, _graph_inputs
from calinode.models.prepare.minilm import FLOAT_NAME, INT8_NAME
from calinode.models.registry import ModelRegistry
from calinode.protocol.errors import ConfigError, ErrorCode, JobError

LONG_TEXT = "peer to peer networks route embedding jobs to capable workers " * 60


def _variant(registry: ModelRegistry, *, max_batch: int = 32, **changes: Any) -> OnnxEmbedder:
    """Another embedder over the files of minilm-l6, with manifest fields changed."""
    manifest = replace(registry.get(FLOAT_NAME), **changes)
    return OnnxEmbedder(manifest, registry.folder(FLOAT_NAME), threads=2, max_batch=max_batch)


@pytest.fixture(scope="module")
def e5_like(minilm_registry: ModelRegistry) -> OnnxEmbedder:
    return _variant(minilm_registry, name="fake-e5", query_prefix="query: ",
                    passage_prefix="passage: ")


def test_vectors_are_float32_unit_rows_in_order(minilm: OnnxEmbedder) -> None:
    result = minilm.embed(["a cat", "a kitten", "tax law"])
    assert result.vectors.shape == (3, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    cat, kitten, tax = result.vectors
    assert cat @ kitten > cat @ tax + 0.2
    assert result.token_counts == [4, 4, 4]  # [CLS] a cat [SEP]
    assert result.truncated == []


@pytest.mark.slow
def test_matches_sentence_transformers(
    minilm: OnnxEmbedder, varied_sentences: list[str], tokenizer_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if importlib.util.find_spec("sentence_transformers") is None:
        pytest.skip("sentence_transformers is not installed (reference check only)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tokenizer_dir), device="cpu")
    assert reference.max_seq_length == minilm.manifest.max_tokens
    expected = reference.encode([*varied_sentences, LONG_TEXT], convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
    actual = minilm.embed([*varied_sentences, LONG_TEXT]).vectors
    cosines = np.sum(expected * actual, axis=1)
    # minilm-l6 holds the original float32 weights: the same model, not a close copy
    assert cosines.min() >= 0.9999, f"mean {cosines.mean():.6f}, min {cosines.min():.6f}"


def test_bucketing_equals_one_by_one_in_the_original_order(
    minilm_registry: ModelRegistry, varied_sentences: list[str]
) -> None:
    embedder = _variant(minilm_registry, max_batch=5)
    texts = [*varied_sentences[::-1], LONG_TEXT, "x"]
    batched = embedder.embed(texts)
    for index, text in enumerate(texts):
        alone = embedder.embed([text])
        np.testing.assert_allclose(batched.vectors[index], alone.vectors[0], atol=1e-5)
        assert batched.token_counts[index] == alone.token_counts[0]


def test_int8_vectors_do_not_depend_on_batch_companions(
    minilm_int8: OnnxEmbedder, varied_sentences: list[str]
) -> None:
    """Dynamic quantization scales each activation tensor by its range over the whole batch
    (measured: cosine down to 0.958 for "Ok" inside a batch of 56), so the embedder runs such a
    model one text per call: a text's vector is the same whatever it is batched with."""
    assert not minilm_int8.manifest.batch_invariant and minilm_int8.max_batch == 1
    batched = minilm_int8.embed(varied_sentences).vectors
    alone = np.stack([minilm_int8.embed([text]).vectors[0] for text in varied_sentences])
    np.testing.assert_array_equal(batched, alone)


def test_long_text_is_truncated_and_reported(minilm: OnnxEmbedder) -> None:
    result = minilm.embed(["short text", LONG_TEXT, "another short one"])
    assert result.truncated == [1]
    assert result.token_counts[1] == minilm.manifest.max_tokens
    # what is past max_tokens does not count
    longer = minilm.embed([LONG_TEXT + " completely different ending about cooking pasta"])
    np.testing.assert_allclose(longer.vectors[0], result.vectors[1], atol=1e-5)


def test_text_of_exactly_max_tokens_is_not_reported(minilm: OnnxEmbedder) -> None:
    words = "word " * (minilm.manifest.max_tokens - 2)  # + [CLS] and [SEP]
    result = minilm.embed([words, words + "more"])
    assert result.token_counts == [minilm.manifest.max_tokens] * 2
    assert result.truncated == [1]


def test_query_and_passage_prefixes(e5_like: OnnxEmbedder, minilm: OnnxEmbedder) -> None:
    text = "how long do cats sleep"
    query = e5_like.embed([text], input_type="query")
    passage = e5_like.embed([text], input_type="passage")
    raw = e5_like.embed([text], input_type="raw")
    assert float(query.vectors[0] @ passage.vectors[0]) < 0.999
    assert query.token_counts[0] > raw.token_counts[0]
    np.testing.assert_allclose(raw.vectors, minilm.embed([text]).vectors, atol=1e-5)
    np.testing.assert_allclose(query.vectors, e5_like.embed(["query: " + text],
                                                            input_type="raw").vectors, atol=1e-5)
    np.testing.assert_allclose(passage.vectors, minilm.embed(["passage: " + text]).vectors,
                               atol=1e-5)


def test_without_prefixes_every_input_type_is_the_same(minilm: OnnxEmbedder) -> None:
    kinds: tuple[InputType, ...] = ("query", "passage", "raw")
    vectors = [minilm.embed(["same text"], input_type=kind).vectors for kind in kinds]
    np.testing.assert_array_equal(vectors[0], vectors[1])
    np.testing.assert_array_equal(vectors[1], vectors[2])


@pytest.mark.parametrize("dimensions", [1, 64, 128, 383, 384])
def test_dimensions_keep_the_first_components_renormalized(
    minilm: OnnxEmbedder, dimensions: int
) -> None:
    texts = ["matryoshka dolls nest inside each other", "vector search"]
    full = minilm.embed(texts).vectors
    cut = minilm.embed(texts, dimensions=dimensions).vectors
    assert cut.shape == (2, dimensions) and cut.dtype == np.float32
    expected = full[:, :dimensions] / np.linalg.norm(full[:, :dimensions], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_dimensions_without_normalization_only_cut(minilm_registry: ModelRegistry) -> None:
    embedder = _variant(minilm_registry, name="raw-minilm", normalize=False)
    full = embedder.embed(["unnormalized"]).vectors
    assert abs(float(np.linalg.norm(full)) - 1.0) > 0.01
    np.testing.assert_array_equal(embedder.embed(["unnormalized"], dimensions=10).vectors,
                                  full[:, :10])


def test_cls_pooling_differs_from_mean_pooling(
    minilm_registry: ModelRegistry, minilm: OnnxEmbedder
) -> None:
    embedder = _variant(minilm_registry, name="cls-minilm", pooling="cls")
    texts = ["first token pooling", "a rather different sentence"]
    cls, mean = embedder.embed(texts).vectors, minilm.embed(texts).vectors
    np.testing.assert_allclose(np.linalg.norm(cls, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(cls * mean, axis=1) < 0.99)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ([], "empty"),
        ([""], r"texts\[0\] is empty"),
        (["fine", " \n\t "], r"texts\[1\] is empty or only whitespace"),
        (["fine", 3], r"texts\[1\] is a int"),
        ([None], r"texts\[0\] is a NoneType"),
        ([b"bytes"], r"texts\[0\] is a bytes"),
        (["fine", "lone \ud800 surrogate"], r"texts\[1\] is not valid Unicode"),
        ("a single string", "list of strings"),
        (b"bytes", "list of strings"),
        ({"a": 1}, "list of strings"),
    ],
)
def test_bad_texts_are_bad_requests(minilm: OnnxEmbedder, texts: Any, match: str) -> None:
    with pytest.raises(JobError, match=match) as caught:
        minilm.embed(texts)
    assert caught.value.code is ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("dimensions", [0, -1, 385, 1.5, True, "64"])
def test_bad_dimensions_are_bad_requests(minilm: OnnxEmbedder, dimensions: Any) -> None:
    with pytest.raises(JobError, match="dimensions must be an integer from 1 to 384") as caught:
        minilm.embed(["text"], dimensions=dimensions)
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_bad_input_type_is_a_bad_request(minilm: OnnxEmbedder) -> None:
    with pytest.raises(JobError, match="input_type must be one of query, passage, raw") as caught:
        minilm.embed(["text"], input_type="document")  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_concurrent_calls_from_threads(minilm_int8: OnnxEmbedder,
                                       varied_sentences: list[str]) -> None:
    groups = [varied_sentences[i:i + 7] for i in range(0, 49, 7)]
    sequential = [minilm_int8.embed(group).vectors for group in groups]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda group: minilm_int8.embed(group).vectors, groups))
    for one, other in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(one, other)


def test_feeds_only_the_inputs_the_graph_declares() -> None:
    def session(*inputs: tuple[str, str]) -> Any:
        declared = [SimpleNamespace(name=name, type=kind) for name, kind in inputs]
        return SimpleNamespace(get_inputs=lambda: declared)

    two = session(("input_ids", "tensor(int64)"), ("attention_mask", "tensor(int32)"))
    assert _graph_inputs(two, "m") == {"input_ids": np.int64, "attention_mask": np.int32}
    with pytest.raises(ConfigError, match="pixel_values"):
        _graph_inputs(session(("input_ids", "tensor(int64)"),
                              ("pixel_values", "tensor(float)")), "m")
    with pytest.raises(ConfigError, match="type tensor"):
        _graph_inputs(session(("input_ids", "tensor(float)")), "m")


def test_bad_construction_is_a_config_error(minilm_registry: ModelRegistry) -> None:
    manifest, folder = minilm_registry.get(INT8_NAME), minilm_registry.folder(INT8_NAME)
    with pytest.raises(ConfigError, match="max_batch"):
        OnnxEmbedder(manifest, folder, max_batch=0)
    with pytest.raises(ConfigError, match="threads"):
        OnnxEmbedder(manifest, folder, threads=0)
    with pytest.raises(ConfigError, match="tokenizer"):
        OnnxEmbedder(manifest, folder.parent / "nowhere")
