"""A collection whose pinned model file is not served: the refusal says what to do."""

from __future__ import annotations

from calinode.node.rag.pinned_model import pinned_model_not_served
from calinode.protocol.collections import CollectionDef
from calinode.protocol.errors import ErrorCode

PINNED = "e503dd80ef2567de087232201b03bcaf7f3cdb5b92d5652f681791347c00d232"
SERVED = "f" * 64


def _collection(model: str) -> CollectionDef:
    return CollectionDef(name="papers", model=model, model_sha256=PINNED, dim=384,
                         pooling="mean", normalize=True)


def test_a_former_default_names_both_files_and_both_ways_out() -> None:
    error = pinned_model_not_served(_collection("minilm-l6"), SERVED, what="the queries")
    assert error.code == ErrorCode.UNKNOWN_MODEL
    message = str(error)
    assert PINNED in message and SERVED in message and "the queries" in message
    assert "calinode models prepare minilm-l6-v1" in message
    assert "calinode collections create NEW --model minilm-l6" in message
    assert "calinode collections drop papers" in message


def test_another_model_gets_no_rebuild_advice() -> None:
    message = str(pinned_model_not_served(_collection("e5-small"), SERVED, what="the documents"))
    assert "models prepare" not in message
    assert "calinode collections create NEW --model e5-small" in message
