
from calinode.node.jobs.routing import Candidate, SentJobs, model_offers, rank_candidates
from calinode.protocol.capabilities import Capabilities, ModelOffer

A, B, G = "a" * 64, "b" * 64, "c" * 64


def caps(name: str, sha: str) -> Capabilities:
    return Capabilities(embed=(ModelOffer(name=name, kind="embed", sha256=sha, dim=384,
                                          pooling="mean"),))


def test_self_first_when_capable_and_spare() -> None:
    cands = model_offers("m", "embed", A,
                         [("p1", caps("m", A), 0, 1.0), ("p2", caps("m", A), 2, 0.5)],
                         "me", 0)
    assert [c.peer_id for c in rank_candidates(cands, local_spare=True)] == ["me", "p1", "p2"]
    assert [c.peer_id for c in rank_candidates(cands, local_spare=False)] == ["p1", "p2", "me"]


def test_least_loaded_then_lowest_rtt() -> None:
    cands = model_offers("m", "embed", None,
                         [("slow", caps("m", A), 1, 9.0), ("fast", caps("m", A), 1, 2.0),
                          ("idle", caps("m", A), 0, 50.0)], "me", 0)
    assert [c.peer_id for c in rank_candidates(cands, local_spare=True)] == ["idle", "fast", "slow"]


def test_only_byte_identical_models_qualify() -> None:
    peers = [("p1", caps("m", A), 0, 1.0), ("p2", caps("m", B), 0, 1.0),
             ("p3", caps("m", B), 0, 1.0), ("p4", caps("other", A), 0, 1.0)]
    with_local = model_offers("m", "embed", A, peers, "me", 0)
    assert {c.peer_id for c in with_local} == {"me", "p1"}
    without_local = model_offers("m", "embed", None, peers, "me", 0)
    assert {c.peer_id for c in without_local} == {"p2", "p3"}  # the majority copy
    assert model_offers("nope", "embed", None, peers, "me", 0) == []


def test_generate_offers_are_separate_from_embed() -> None:
    offer = ModelOffer(name="g", kind="generate", sha256=G, context_length=2048)
    peers = [("p1", Capabilities(generate=(offer,)), 0, 1.0)]
    assert model_offers("g", "embed", None, peers, "me", 0) == []
    assert [c.peer_id for c in model_offers("g", "generate", None, peers, "me", 0)] == ["p1"]


def test_candidate_is_hashable_value() -> None:
    assert Candidate("p", "A", 0, 1.0) == Candidate("p", "A", 0, 1.0)


def test_a_record_older_than_our_last_finished_job_does_not_count_its_load() -> None:
    now = [10.0]
    sent = SentJobs(clock=lambda: now[0])
    assert sent.record_load("p", 3, received_at=5.0) == 3  # nothing of ours ended: trust it
    with sent.running("p"):
        assert sent.record_load("p", 0, received_at=5.0) == 1  # ours in flight count
        now[0] = 12.0
    # the record (received at 11) may still count the job of ours that ended at 12
    assert sent.record_load("p", 2, received_at=11.0) == 0
    assert sent.record_load("p", 2, received_at=13.0) == 2  # a newer record counts again
    assert sent.record_load("q", 4, received_at=1.0) == 4  # another peer is unaffected


def test_sent_jobs_remember_the_job_ends_of_the_newest_peers_only() -> None:
    from calinode.node.jobs.routing import MAX_TRACKED_PEERS

    now = [0.0]
    sent = SentJobs(clock=lambda: now[0])
    for n in range(MAX_TRACKED_PEERS + 1):
        now[0] = float(n + 1)
        with sent.running(f"p{n}"):
            pass
    # p0's end (at 1) is forgotten: its record counts again; p1's (at 2) is still known
    assert sent.record_load("p0", 3, received_at=0.5) == 3
    assert sent.record_load("p1", 3, received_at=0.5) == 0
