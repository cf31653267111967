from pathlib import Path

import pytest

from calinode.node.index.collections import CollectionBook, CollectionDef
from calinode.protocol.errors import ErrorCode, JobError, ProtocolError


def definition(**overrides: object) -> CollectionDef:
    settings: dict[str, object] = {"name": "docs", "model": "minilm-l6-int8",
                                   "model_sha256": "a" * 64, "dim": 384, "pooling": "mean",
                                   "normalize": True}
    settings.update(overrides)
    return CollectionDef(**settings)  # type: ignore[arg-type]


def test_newest_definition_wins_and_persists(tmp_path: Path) -> None:
    book = CollectionBook(tmp_path)
    assert book.merge(definition())
    assert not book.merge(definition())  # same: nothing changes
    assert book.merge(definition(version=2, replicas=3))
    assert not book.merge(definition(version=1, replicas=1))  # older: ignored
    again = CollectionBook(tmp_path)
    assert again.get("docs").replicas == 3 and again.names() == ["docs"]


def test_same_version_conflict_is_resolved_the_same_everywhere(tmp_path: Path) -> None:
    a, b = definition(shards=8), definition(shards=4)
    book1, book2 = CollectionBook(tmp_path / "1"), CollectionBook(tmp_path / "2")
    for first, second, book in ((a, b, book1), (b, a, book2)):
        book.merge(first)
        book.merge(second)
    assert book1.get("docs") == book2.get("docs")


def test_drop_is_a_newer_definition(tmp_path: Path) -> None:
    book = CollectionBook(tmp_path)
    book.merge(definition())
    book.merge(book.get("docs").dropped_copy())
    assert book.names() == []
    with pytest.raises(JobError) as caught:
        book.get("docs")
    assert caught.value.code == ErrorCode.UNKNOWN_COLLECTION
    assert book.get("docs", include_dropped=True).dropped


@pytest.mark.parametrize("bad", [{"name": "Bad Name"}, {"model_sha256": "xyz"}, {"shards": 0},
                                 {"replicas": 17}, {"write_quorum": 3}, {"metric": "l2"},
                                 {"chunk_overlap": 150}])
def test_bad_definitions(bad: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        definition(**bad)


def test_quorum_is_a_majority_by_default() -> None:
    assert definition(replicas=2).quorum == 2
    assert definition(replicas=3).quorum == 2
    assert definition(replicas=3, write_quorum=1).quorum == 1
    assert CollectionDef.from_wire(definition().to_wire()) == definition()
