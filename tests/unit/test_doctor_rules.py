"""The doctor's verdicts (node/doctor_rules.py): pure functions of the facts, one test per
check, each checking that the healthy facts give nothing and the broken ones exactly one
finding with its stable code."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from calinode.node.doctor_rules import (
    CLOCK_SKEW_LIMIT_MS,
    DISK_MIN_FREE,
    EXIT_PROBLEMS,
    HANDSHAKE_RECENT_S,
    MISCONFIG,
    judge,
    needs_fixing,
)
from calinode.node.rejections import REASONS

PEER = "12D3KooWPeerPeerPeerPeerPeerPeerPeerPeerPeerPeerPeer"
OTHER = "12D3KooWOtherOtherOtherOtherOtherOtherOtherOtherOth"


def healthy_node() -> dict[str, Any]:
    return {
        "peer_id": "12D3KooWSelf", "version": "0.1.0", "protocol_version": "1.0.0",
        "home": "/home/x/.local/share/calinode",
        "addrs": ["/ip4/192.168.1.5/tcp/7411/p2p/12D3KooWSelf"],
        "listen": ["/ip4/0.0.0.0/tcp/7411"],
        "swarm": {"mode": "private", "private": True, "open": False, "allowlist": 0,
                  "key_file": None},
        "network": {"connections": {PEER: {"inbound": 1, "outbound": 0,
                                           "remote_ips": ["192.168.1.6"]}},
                    "observed_addrs": [],
                    "handshake_failures": {"failed": 0, "sources": {},
                                           "last_s_ago": None}},
        "rejected_input": {}, "identity_conflict": {"seen": 0, "addrs": []},
        "sync_failures": {}, "replicas_not_ready": {},
        "models": [{"name": "minilm-l6-int8", "kind": "embed", "sha256": "a" * 64}],
        "peers": [{"peer_id": PEER, "alive": True, "last_seen": 0.4, "rtt_ms": 1.0,
                   "version": "0.1.0", "protocol_version": "1.0.0",
                   "addrs": ["/ip4/192.168.1.6/tcp/7411"],
                   "clock": {"skew_ms": 12, "uncertainty_ms": 2, "rtt_ms": 3.0}}],
    }


def healthy_local() -> dict[str, Any]:
    private = {"exists": True, "mode": 0o600, "owner_uid": 1000, "uid": 1000}
    return {"home": "/home/x/.local/share/calinode",
            "models": [{"name": "minilm-l6-int8", "problems": []}],
            "token": {"path": "/h/api.token", **private},
            "swarm_keys": [{"path": "/h/swarm.key", **private}],
            "disk": {"path": "/h", "free_bytes": 50 << 30, "total_bytes": 100 << 30}}


def checks(node: dict[str, Any] | None, local: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f.check, f.severity) for f in judge(node, local)]


def test_healthy_facts_have_nothing_to_fix() -> None:
    assert judge(healthy_node(), healthy_local()) == []
    assert not needs_fixing([])
    assert EXIT_PROBLEMS not in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130, 141)  # its own status


def test_a_node_that_does_not_answer_is_one_problem_and_local_checks_still_run() -> None:
    local = healthy_local() | {"node_error": "PEER_UNREACHABLE: cannot reach"}
    local["models"] = [{"name": "x", "problems": ["model.onnx: sha256 mismatch"]}]
    assert checks(None, local) == [("node_unreachable", "problem"),
                                   ("model_corrupt", "problem")]
    assert "cannot reach" in judge(None, local)[0].what


def test_a_corrupted_model_names_the_model_and_the_reinstall() -> None:
    local = healthy_local()
    local["models"] = [{"name": "minilm-l6-int8", "problems": ["model.onnx: sha256 mismatch"]},
                       {"name": "smollm2-135m", "problems": []}]
    [finding] = judge(healthy_node(), local)
    assert (finding.check, finding.subject) == ("model_corrupt", "model minilm-l6-int8")
    assert "sha256 mismatch" in finding.what
    assert "calinode models remove minilm-l6-int8" in finding.fix


@pytest.mark.parametrize("skew", [CLOCK_SKEW_LIMIT_MS + 5_000, -600_000])
def test_a_peer_clock_off_by_more_than_the_limit_is_a_problem(skew: int) -> None:
    node = healthy_node()
    node["peers"][0]["clock"] = {"skew_ms": skew, "uncertainty_ms": 3, "rtt_ms": 6.0}
    [finding] = judge(node, healthy_local())
    assert finding.check == "clock_skew" and finding.subject.startswith("peer 12D3KooWPeerPeer")
    assert ("behind" if skew < 0 else "ahead of") in finding.what
    if skew == -600_000:
        assert "10.0 min behind" in finding.what


def test_clock_skew_within_the_uncertainty_is_not_reported() -> None:
    node = healthy_node()
    # 35 s off, but the ping took 20 s: the offset may be as small as 25 s
    node["peers"][0]["clock"] = {"skew_ms": 35_000, "uncertainty_ms": 10_000, "rtt_ms": 20e3}
    assert judge(node, healthy_local()) == []
    node["peers"][0]["clock"] = {"error": "DEADLINE_EXCEEDED: ping"}  # no estimate: no verdict
    assert judge(node, healthy_local()) == []


def test_stale_relayed_records_are_folded_into_a_found_clock_skew() -> None:
    node = healthy_node()
    node["rejected_input"] = {"stale_record": 7}
    assert checks(node, healthy_local()) == [("stale_records", "problem")]
    node["peers"][0]["clock"] = {"skew_ms": -600_000, "uncertainty_ms": 3}
    assert checks(node, healthy_local()) == [("clock_skew", "problem")]


def test_failed_handshakes_name_the_sources_and_the_invite() -> None:
    node = healthy_node()
    node["network"]["handshake_failures"] = {"failed": 3, "sources": {"10.0.0.9": 3},
                                             "last_s_ago": 1.5}
    node["rejected_input"] = {"bad_handshake": 3}  # counted there too: reported once
    [finding] = judge(node, healthy_local())
    assert finding.check == "bad_handshake" and "10.0.0.9" in finding.subject
    assert finding.severity == "problem" and "the last 2 s ago" in finding.what
    assert "another swarm key" in finding.what and "calinode invite" in finding.fix
    # one old failure (a peer cut off mid-handshake, long ago) is only a note
    node["network"]["handshake_failures"]["last_s_ago"] = HANDSHAKE_RECENT_S + 1
    assert checks(node, healthy_local()) == [("bad_handshake", "note")]
    node["network"]["handshake_failures"]["last_s_ago"] = 1.5
    node["swarm"] = {"mode": "open", "private": False}
    assert [f.check for f in judge(node, healthy_local())] == ["bad_handshake", "open_swarm"]
    assert "this open swarm" in judge(node, healthy_local())[0].what


def test_an_open_swarm_beyond_loopback_is_a_note_and_on_loopback_nothing() -> None:
    node = healthy_node()
    node["swarm"] = {"mode": "open", "private": False, "open": True}
    assert checks(node, healthy_local()) == [("open_swarm", "note")]
    assert not needs_fixing(judge(node, healthy_local()))
    node["addrs"] = ["/ip4/127.0.0.1/tcp/7411/p2p/12D3KooWSelf"]
    assert judge(node, healthy_local()) == []


def test_refusals_that_point_at_a_misconfigured_peer_are_reported_load_refusals_not() -> None:
    assert set(MISCONFIG) <= REASONS
    node = healthy_node()
    node["rejected_input"] = {"overloaded": 40, "over_budget": 2, "relay_cap": 9}
    assert judge(node, healthy_local()) == []
    node["rejected_input"] = {"bad_capabilities": 2, "not_allowed": 1}
    found = judge(node, healthy_local())
    assert [(f.check, f.subject) for f in found] == [("refused_input", "not_allowed"),
                                                      ("refused_input", "bad_capabilities")]
    assert "--allow" in found[0].fix


def test_dead_and_degraded_peers() -> None:
    node = healthy_node()
    peer = node["peers"][0]
    peer.update(alive=False, last_seen=42.0, clock=None)
    [finding] = judge(node, healthy_local())
    assert finding.check == "peer_dead" and "42 s" in finding.what
    assert "192.168.1.6" in finding.fix
    peer.update(alive=True, protocol_version="2.0.0")
    assert checks(node, healthy_local()) == [("peer_protocol", "problem")]
    peer.update(protocol_version="1.0.0", version="0.2.0")
    assert checks(node, healthy_local()) == [("peer_version", "note")]


def test_identity_conflict_sync_failures_and_replicas() -> None:
    node = healthy_node()
    node["identity_conflict"] = {"seen": 3, "addrs": ["/ip4/10.0.0.2/tcp/7411"]}
    node["sync_failures"] = {"docs/3": "PEER_UNREACHABLE: no replica answered"}
    node["replicas_not_ready"] = {"docs/1": "catching up"}
    assert checks(node, healthy_local()) == [
        ("identity_conflict", "problem"), ("shard_sync_failing", "problem"),
        ("replicas_not_ready", "note")]


def test_nat_is_reported_only_when_no_peer_dialled_in() -> None:
    node = healthy_node()
    node["network"]["observed_addrs"] = ["/ip4/203.0.113.7/tcp/40211"]
    assert judge(node, healthy_local()) == []  # a peer dialled in: reachable
    node["network"]["connections"][PEER]["inbound"] = 0
    [finding] = judge(node, healthy_local())
    assert finding.check == "behind_nat" and "203.0.113.7" in finding.what
    assert "port 7411" in finding.fix
    node["network"]["observed_addrs"] = ["/ip4/192.168.1.5/tcp/40211"]  # our own address
    assert judge(node, healthy_local()) == []


def test_a_peer_on_another_machine_advertising_only_loopback() -> None:
    node = healthy_node()
    node["peers"][0]["addrs"] = ["/ip4/127.0.0.1/tcp/7411"]
    [finding] = judge(node, healthy_local())
    assert finding.check == "peer_loopback_only" and "192.168.1.6" in finding.what
    node["network"]["connections"][PEER]["remote_ips"] = ["127.0.0.1"]  # same machine: fine
    assert judge(node, healthy_local()) == []


def test_token_and_swarm_key_files_must_be_private_and_ours() -> None:
    local = healthy_local()
    local["token"]["mode"] = 0o644
    local["swarm_keys"][0]["owner_uid"] = 0
    found = judge(healthy_node(), local)
    assert [(f.check, f.fix) for f in found] == [
        ("token_permissions", "chmod 600 /h/api.token"),
        ("swarm_key_permissions", "chown $(id -u) /h/swarm.key (as root), or run calinode as "
                                  "its owner")]
    local = healthy_local()
    local["swarm_keys"] = [{"path": "/h/swarm.key", "exists": False}]  # an open swarm: none
    assert judge(healthy_node(), local) == []


def test_disk_low_is_a_problem_and_filling_a_note() -> None:
    local = healthy_local()
    local["disk"] = {"path": "/h", "free_bytes": DISK_MIN_FREE - 1, "total_bytes": 100 << 30}
    assert checks(healthy_node(), local) == [("disk_low", "problem")]
    local["disk"] = {"path": "/h", "free_bytes": 2 << 30, "total_bytes": 100 << 30}
    assert checks(healthy_node(), local) == [("disk_filling", "note")]


def test_problems_come_before_notes() -> None:
    node = healthy_node()
    node["swarm"] = {"mode": "open", "private": False}
    node["peers"][0]["alive"] = False
    severities = [f.severity for f in judge(node, healthy_local())]
    assert severities == sorted(severities, key=lambda s: s != "problem")
    assert severities[0] == "problem" and "note" in severities


def test_judging_does_not_change_the_facts() -> None:
    node, local = healthy_node(), healthy_local()
    node["peers"][0]["clock"] = {"skew_ms": -600_000, "uncertainty_ms": 3}
    before = copy.deepcopy((node, local))
    judge(node, local)
    assert (node, local) == before
