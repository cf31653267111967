"""A search query given as a vector (the dashboard's in-browser embedding) is checked against
the collection's pinned model and dimension before it is searched (node/rag/query_vector.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from calinode.node.rag.query_vector import query_vector
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import BadRequest, ErrorCode

SHA = "ab" * 32


def definition(*, normalize: bool = True, dim: int = 4) -> CollectionDef:
    return CollectionDef(name="papers", model="minilm-l6-int8", model_sha256=SHA, dim=dim,
                         pooling="mean", normalize=normalize, query_prefix="",
                         passage_prefix="", shards=2, replicas=1)


def test_a_vector_of_the_collections_model_becomes_one_normalized_float32_row() -> None:
    row = query_vector(definition(), [3, 0.0, 4.0, 0], SHA)
    assert row.dtype == np.float32 and row.shape == (1, 4)
    assert row.flags.c_contiguous
    np.testing.assert_allclose(row, [[0.6, 0.0, 0.8, 0.0]], rtol=1e-6)


def test_a_collection_without_normalization_keeps_the_vector_as_given() -> None:
    row = query_vector(definition(normalize=False), [3.0, 0.0, 4.0, 0.0], SHA)
    np.testing.assert_array_equal(row, [[3.0, 0.0, 4.0, 0.0]])


@pytest.mark.parametrize(("vector", "sha", "says"), [
    ([0.1, 0.2, 0.3, 0.4], "cd" * 32, "is not the model of collection papers"),
    ([0.1, 0.2, 0.3, 0.4], None, "model_sha256 must be given"),
    ([0.1, 0.2, 0.3, 0.4], "", "model_sha256 must be given"),
    ([0.1, 0.2, 0.3, 0.4], 7, "model_sha256 must be given"),
    ([0.1, 0.2, 0.3], SHA, "vector has 3 components; collection papers has dimension 4"),
    ([0.1] * 5, SHA, "vector has 5 components"),
    ([], SHA, "vector has 0 components"),
    ("0.1,0.2,0.3,0.4", SHA, "vector must be a list of numbers"),
    ({"0": 0.1}, SHA, "vector must be a list of numbers"),
    (None, SHA, "vector must be a list of numbers"),
    ([0.1, True, 0.3, 0.4], SHA, "vector[1] is not a finite number"),
    ([0.1, 0.2, "0.3", 0.4], SHA, "vector[2] is not a finite number"),
    ([0.1, 0.2, None, 0.4], SHA, "vector[2] is not a finite number"),
    ([0.1, 0.2, [0.3], 0.4], SHA, "vector[2] is not a finite number"),
    ([float("nan"), 0.2, 0.3, 0.4], SHA, "vector[0] is not a finite number"),
    ([0.1, float("inf"), 0.3, 0.4], SHA, "vector[1] is not a finite number"),
    ([0.1, 0.2, 0.3, 1e39], SHA, "beyond float32's range"),
    ([0.1, 0.2, 0.3, 10 ** 400], SHA, "too large for a float"),
    ([0, 0.0, -0.0, 0], SHA, "vector is all zeros"),
])
def test_a_vector_of_another_model_shape_or_kind_is_refused_naming_why(
        vector: Any, sha: Any, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        query_vector(definition(), vector, sha)
    assert refused.value.code is ErrorCode.BAD_REQUEST
    assert says in refused.value.message
