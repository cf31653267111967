"""node/blobs/pull_state.py: chunk bookkeeping of a pull, and its resumable state on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from calinode.node.blobs.pull_state import MAX_PEER_FAILURES, ChunkBook, PartialFolder
from calinode.protocol.blobs import MIN_CHUNK_SIZE, BlobFile, TransferManifest

CHUNK = MIN_CHUNK_SIZE


def make_transfer(data: list[bytes]) -> TransferManifest:
    files = tuple(BlobFile(path=f"f{i}", size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
                           chunks=tuple(hashlib.sha256(blob[o:o + CHUNK]).hexdigest()
                                        for o in range(0, len(blob), CHUNK)))
                  for i, blob in enumerate(data))
    return TransferManifest(sha256=files[0].sha256, chunk_size=CHUNK, model="{}", files=files)


def piece(blob: bytes, c: int) -> bytes:
    return blob[c * CHUNK:(c + 1) * CHUNK]


def test_a_corrupt_chunk_goes_back_and_its_sender_is_used_no_more() -> None:
    blobs = [os.urandom(2 * CHUNK + 3), b"tok"]
    book = ChunkBook.start(make_transfer(blobs))
    assert list(book.pending) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    chunk = book.take()
    assert chunk == (0, 0)
    assert not book.check(chunk, b"\xff" + piece(blobs[0], 0)[1:])
    assert not book.check(chunk, piece(blobs[0], 0)[:-1])  # wrong length
    book.corrupt(chunk, "evil")
    assert book.faulty == {"evil": 1} and not book.usable("evil") and book.usable("good")
    assert book.take() == (0, 0)  # refetched first, from another peer
    assert book.check((0, 0), piece(blobs[0], 0))
    book.arrived((0, 0), "good", CHUNK)
    assert book.verified == {(0, 0)} and book.fetched_bytes == CHUNK and not book.done


def test_transit_failures_retry_and_drop_a_peer_after_a_few_in_a_row() -> None:
    book = ChunkBook.start(make_transfer([os.urandom(CHUNK)]))
    for _ in range(MAX_PEER_FAILURES - 1):
        book.failed(book.take() or (0, 0), "flaky")
    assert book.usable("flaky")
    book.failed(book.take() or (0, 0), "flaky")
    assert not book.usable("flaky") and "flaky" in book.dropped
    assert list(book.pending) == [(0, 0)]  # the chunk is never lost
    assert not book.faulty  # failing in transit is not lying


def test_the_partial_folder_resumes_only_chunks_that_still_check(tmp_path: Path) -> None:
    blobs = [os.urandom(3 * CHUNK), os.urandom(100)]
    transfer = make_transfer(blobs)
    folder = PartialFolder(tmp_path, transfer.sha256)
    assert folder.open(transfer) == []
    for chunk in ((0, 0), (0, 2), (1, 0)):
        folder.write(transfer, chunk, piece(blobs[chunk[0]], chunk[1]))
    # a crash: a torn last line, a listed chunk whose bytes rotted, a line out of range
    with folder.log.open("a") as fh:
        fh.write("0 1\n7 0\n0 99\n1")
    with folder.part(0).open("r+b") as fh:
        fh.seek(2 * CHUNK)
        fh.write(b"\0")
    resumed = folder.open(transfer)
    assert resumed == [(0, 0), (1, 0)]
    book = ChunkBook.start(transfer, resumed)
    assert book.resumed_bytes == CHUNK + 100
    assert sorted(book.pending) == [(0, 1), (0, 2)]


def test_a_partial_folder_of_another_manifest_is_wiped(tmp_path: Path) -> None:
    blob = os.urandom(CHUNK + 1)
    transfer = make_transfer([blob])
    folder = PartialFolder(tmp_path, transfer.sha256)
    folder.open(transfer)
    folder.write(transfer, (0, 0), piece(blob, 0))
    other = TransferManifest(sha256=transfer.sha256, chunk_size=2 * CHUNK, model="{}",
                             files=(BlobFile(path="f0", size=len(blob),
                                             sha256=transfer.sha256,
                                             chunks=(hashlib.sha256(blob).hexdigest(),)),))
    assert folder.open(other) == []
    assert folder.part(0).stat().st_size == len(blob)


def test_readyz_says_which_model_is_being_pulled() -> None:
    from calinode.node.blobs.swarm_models import ModelPulls, PullProgress
    from calinode.node.readiness import readiness

    pulls = ModelPulls()
    pulls.active["ab" * 32] = PullProgress("minilm-l6-int8", done=41, total=100)
    verdict = readiness(wanted_models=["minilm-l6-int8"], loaded_models=[], index=False,
                        membership_rounds=0, settled_sync_rounds=0, not_ready={},
                        pulling=pulls.describe())
    assert not verdict.ready
    assert verdict.reasons[0] == "pulling model minilm-l6-int8 (41%)"


def test_blob_options_are_bounded() -> None:
    import pytest

    from calinode.node.config import MIN_BLOB_RATE, NodeConfig
    from calinode.protocol.errors import ConfigError

    home = Path("/nonexistent")
    assert NodeConfig(home=home).blob_rate == 0  # no cap by default
    assert NodeConfig(home=home, blob_rate=MIN_BLOB_RATE).blob_rate == MIN_BLOB_RATE
    for bad in ({"blob_rate": MIN_BLOB_RATE - 1}, {"blob_rate": -1},
                {"blob_max_transfers": 0}, {"blob_max_transfers": 65}):
        with pytest.raises(ConfigError):
            NodeConfig(home=home, **bad)  # type: ignore[arg-type]


def test_a_busy_peer_is_retried_longer_than_a_broken_one() -> None:
    from calinode.node.blobs.pull_state import MAX_PEER_BUSY

    book = ChunkBook.start(make_transfer([os.urandom(CHUNK)]))
    for _ in range(MAX_PEER_BUSY - 1):
        book.failed(book.take() or (0, 0), "busy", busy=True)
    assert book.usable("busy")
    book.arrived(book.take() or (0, 0), "busy", CHUNK)  # it answered: the count starts over
    assert book.busy["busy"] == 0 and book.done


def test_models_are_found_by_name_or_sha256_among_live_peers() -> None:
    from types import SimpleNamespace
    from typing import Any

    import pytest

    from calinode.node.blobs.swarm_models import holders, swarm_models
    from calinode.protocol.capabilities import ModelOffer
    from calinode.protocol.errors import ErrorCode, JobError

    def entry(peer: str, alive: bool, *offers: ModelOffer) -> Any:
        return SimpleNamespace(peer_id=peer, alive=alive,
                               caps=SimpleNamespace(embed=offers, generate=()))

    one = ModelOffer(name="m", kind="embed", sha256="a" * 64, dim=4, pooling="mean")
    other = ModelOffer(name="m", kind="embed", sha256="b" * 64, dim=4, pooling="mean")
    entries = [entry("p1", True, one), entry("p2", True, one), entry("dead", False, other)]
    assert [m.peers for m in swarm_models(entries)] == [["p1", "p2"]]
    assert holders(entries, "m")[1] == ["p1", "p2"]
    assert holders(entries, "a" * 64)[0].name == "m"
    with pytest.raises(JobError) as info:
        holders(entries, "b" * 64)  # only a dead peer holds it
    assert info.value.code == ErrorCode.UNKNOWN_MODEL
    with pytest.raises(JobError) as info:
        holders([*entries, entry("p3", True, other)], "m")  # one name, two models
    assert info.value.code == ErrorCode.BAD_REQUEST
