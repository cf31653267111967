"""Record and peer-exchange byte bounds: the largest legal record fits, the budget holds."""

from __future__ import annotations

import pytest

from calinode.protocol.capabilities import (
    MAX_COLLECTIONS,
    MAX_HELD_SHARDS,
    MAX_JOB_KINDS,
    MAX_LINKS,
    MAX_MODELS,
    Capabilities,
)
from calinode.protocol.codec import unpack
from calinode.protocol.collections import CollectionDef
from calinode.protocol.messages import encode_message
from calinode.protocol.records import (
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_EXCHANGE_BYTES,
    MAX_PUBLIC_KEY,
    MAX_RECORD_BYTES,
    MAX_SIGNATURE,
    META_LIMITS,
    CapabilityRecord,
    Load,
    PeerExchange,
    record_size,
)
from calinode.protocol.validation import MAX_INT64

PEER = "12D3KooW" + "A" * 44
BASE58_DIGITS = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def largest_capabilities() -> dict[str, object]:
    """Every list and string of the capabilities view at its bound."""
    sha = "f" * 64

    def model(kind: str, i: int) -> dict[str, object]:
        name = f"{i:02d}" + "m" * 126
        if kind == "embed":
            return {"name": name, "kind": kind, "sha256": sha, "dim": 16384, "pooling": "mean",
                    "normalize": True, "query_prefix": "q" * 64, "passage_prefix": "p" * 64,
                    "max_tokens": 1 << 20}
        return {"name": name, "kind": kind, "sha256": sha, "context_length": 1 << 24,
                "chat": True}

    collections = [CollectionDef(
        name=f"{i:02d}" + "c" * 62, model="m" * 128, model_sha256=sha, dim=16384,
        pooling="mean", normalize=True, query_prefix="q" * 64, passage_prefix="p" * 64,
        shards=4096, replicas=16, write_quorum=16, index_kind="hnsw", chunk_tokens=8192,
        chunk_overlap=4095, version=MAX_INT64 - 1, dropped=False).to_wire()
        for i in range(MAX_COLLECTIONS)]
    # all held shards in one collection: the largest single map (keys of four digits)
    shards = {collections[0]["name"]: {str(3072 + s): "d" * 128 for s in range(MAX_HELD_SHARDS)}}
    caps: dict[str, object] = {
        "jobs": [f"j{i:02d}" + "j" * 61 for i in range(MAX_JOB_KINDS)],
        "embed": [model("embed", i) for i in range(MAX_MODELS)],
        "generate": [model("generate", i) for i in range(MAX_MODELS)],
        "index": True,
        "collections": collections,
        "shards": shards,
        "links": [BASE58_DIGITS[i % 50] + BASE58_DIGITS[i // 50] * 127 for i in range(MAX_LINKS)],
    }
    Capabilities.from_wire(caps)  # it is legal
    return caps


def largest_record() -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=PEER, public_key=b"k" * MAX_PUBLIC_KEY,
        addrs=tuple(f"{i:02d}" + "/" * (MAX_ADDR_LEN - 2) for i in range(MAX_ADDRS)),
        version="v" * 64, protocol_version="p" * 64, capabilities=largest_capabilities(),
        load=Load(in_flight=MAX_INT64, queue_depth=MAX_INT64), seq=MAX_INT64,
        issued_at_ms=MAX_INT64, signature=b"s" * MAX_SIGNATURE)


def small_record(i: int, pad: int = 0) -> CapabilityRecord:
    return CapabilityRecord(
        peer_id=PEER, public_key=b"k", addrs=(), version="0", protocol_version="1",
        capabilities={"jobs": [], "x": "p" * pad}, load=Load(in_flight=0, queue_depth=0),
        seq=i, issued_at_ms=i, signature=b"s")


def test_the_largest_legal_record_fits_the_record_cap() -> None:
    record = largest_record()
    size = record_size(record)
    assert 150 * 1024 < size <= MAX_RECORD_BYTES, size
    # and a node can send it alone in a peer exchange that the meta limits accept
    data = encode_message(PeerExchange.within_budget(record, []), META_LIMITS)
    assert len(data) <= META_LIMITS.max_frame
    assert unpack(data[4:], META_LIMITS)["record"]["peer_id"] == PEER


def test_exchange_budget_keeps_own_record_and_skips_what_does_not_fit() -> None:
    own = small_record(1, pad=200_000)
    big = [small_record(10 + i, pad=200_000) for i in range(10)]
    tiny = [small_record(100 + i) for i in range(3)]
    px = PeerExchange.within_budget(own, [*big, *tiny])
    assert px.record is own
    total = record_size(own) + sum(record_size(r) for r in px.known)
    assert total <= MAX_EXCHANGE_BYTES
    assert len([r for r in px.known if r.seq >= 100]) == 3  # small ones still fit after
    assert 0 < len([r for r in px.known if r.seq < 100]) < 10
    encode_message(px, META_LIMITS)  # within the frame the meta protocol reads


def test_own_record_goes_in_even_over_the_budget() -> None:
    own = small_record(1, pad=5000)
    px = PeerExchange.within_budget(own, [small_record(2)], budget=100)
    assert px.record is own and px.known == ()


@pytest.mark.parametrize("count", [0, 1, 300])
def test_exchange_never_carries_more_than_256_known(count: int) -> None:
    px = PeerExchange.within_budget(small_record(1), [small_record(i) for i in range(count)])
    assert len(px.known) == min(count, 256)
