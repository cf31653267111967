"""What ``calinode doctor`` concludes from the facts it gathered: pure functions, no I/O.

The facts come from two places: the running node (``GET /v1/doctor``, see
``node/api/doctor_routes.py``: its addresses, peers, clocks, refused input) and this machine
(gathered by ``node/cli/doctor.py``: the model files re-hashed against their manifests, the
API token's mode and owner, the free disk under the home). :func:`judge` turns both into
:class:`Finding` s, each saying what is wrong and what to do next.

A finding is a ``problem`` (something to fix: ``calinode doctor`` exits
:data:`EXIT_PROBLEMS`) or a ``note`` (worth knowing, nothing broken: exit 0). Every finding
has a stable ``check`` code, so scripts and tests branch on codes, never on wording:

======================  ========  ======================================================
check                   severity  when
======================  ========  ======================================================
node_unreachable        problem   no node answers at the API (the other checks are local)
behind_nat              problem   peers observe this node at an IP it does not listen on,
                                  and no peer has dialled in
peer_loopback_only      problem   a peer on another machine advertises only loopback
                                  addresses (nobody else can dial it)
open_swarm              note      an open swarm listening beyond this machine
bad_handshake           problem   inbound connections failed their handshake within
                                  :data:`HANDSHAKE_RECENT_S`: a peer with another swarm key
                                  (or none) tries to join (older failures only: a note)
clock_skew              problem   a peer's clock is more than :data:`CLOCK_SKEW_LIMIT_MS` off
stale_records           problem   relayed records refused as too old, no skewed peer seen
refused_input           problem   peer input refused for reasons that point at a
                                  misconfigured (or hostile) peer: see :data:`MISCONFIG`
model_corrupt           problem   a model file differs from its manifest's sha256 or size (or
                                  a served model's files are gone)
disk_low                problem   less than :data:`DISK_MIN_FREE` free under the home
disk_filling            note      less than :data:`DISK_LOW_FRACTION` of the disk free
token_permissions       problem   the API token file is readable by others, or not ours
swarm_key_permissions   problem   the swarm key file is readable by others, or not ours
peer_dead               problem   a peer in the table is DEAD
peer_protocol           problem   a peer speaks another protocol version
peer_version            note      a peer runs another calinode version
identity_conflict       problem   another node runs with this node's identity
shard_sync_failing      problem   a replica of a shard keeps failing to sync
replicas_not_ready      note      replicas still catching up
======================  ========  ======================================================
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["CLOCK_SKEW_LIMIT_MS", "DISK_LOW_FRACTION", "DISK_MIN_FREE", "EXIT_PROBLEMS",
           "HANDSHAKE_RECENT_S", "MISCONFIG", "Finding", "judge", "needs_fixing"]

#: ``calinode doctor``'s exit status when it found something to fix (0: nothing to fix).
EXIT_PROBLEMS = 10
#: A peer's clock further off than this (beyond the estimate's uncertainty) is a problem.
#: Relayed records older than 5 min are refused and hybrid-clock versions more than 5 min
#: ahead are refused (``MAX_RELAY_AGE_MS``, ``MAX_SKEW_MS``); 30 s leaves room before that.
CLOCK_SKEW_LIMIT_MS = 30_000
#: Failed inbound handshakes are a problem while the last one is this recent (seconds); a
#: peer with another key retries every heartbeat, while one connection cut mid-handshake
#: (a peer restarting) is old news after this.
HANDSHAKE_RECENT_S = 600.0
#: Less free space than this under the home is a problem (shards, models and logs live there).
DISK_MIN_FREE = 1 << 30
#: Less than this fraction of the disk free is worth a note.
DISK_LOW_FRACTION = 0.05
#: Refusal reasons that point at a peer set up wrongly (another version, another key, a
#: copied home, a hostile member), with what to do. Load refusals (``overloaded``,
#: ``over_budget``, ``relay_cap``) are the node protecting itself: not listed.
MISCONFIG: dict[str, str] = {
    "not_allowed": "a peer outside --allow tried to connect: add its id with --allow, or "
                   "ignore it if it should not be a member",
    "bad_frame": "a peer broke the wire protocol: compare versions (calinode peers) and "
                 "upgrade it",
    "bad_record": "a peer sent a capability record that fails validation: compare versions "
                  "(calinode peers) and upgrade it",
    "forged_record": "a peer sent records with bad signatures: find it in the node's log "
                     "(\"refused input from\") and remove it from the swarm",
    "oversize_record": "a peer sent records over the size cap: compare versions and upgrade "
                       "it, or remove it if it is not yours",
    "bad_capabilities": "a peer advertises capabilities this node cannot read: compare "
                        "versions (calinode peers) and upgrade it",
    "bad_definition": "a peer sent an invalid collection definition: compare versions and "
                      "upgrade it",
    "bad_reply": "a peer answered jobs with invalid replies: compare versions (calinode "
                 "peers) and upgrade it; check its model files (calinode doctor on it)",
    "bad_params": "a peer sent jobs with invalid parameters: compare versions and upgrade it",
}

Severity = Literal["problem", "note"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the doctor found: which check, how bad, about what, and what to do."""

    check: str
    severity: Severity
    subject: str
    what: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def needs_fixing(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "problem" for f in findings)


def _short(peer_id: str) -> str:
    return peer_id[:16] + "..." if len(peer_id) > 19 else peer_id


def _ip_of(addr: str) -> str | None:
    parts = addr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6"):
        return parts[2]
    return None


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def _seconds(ms: float) -> str:
    s = abs(ms) / 1000
    if s < 1:
        return f"{abs(ms):.0f} ms"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


# -- checks of the node's view -------------------------------------------------------------

def judge_addresses(node: Mapping[str, Any]) -> list[Finding]:
    """Are we reachable where we say we are, and are our peers?"""
    found: list[Finding] = []
    ours = {ip for ip in (_ip_of(a) for a in node.get("addrs", [])) if ip}
    network = node.get("network") or {}
    connections: Mapping[str, Mapping[str, Any]] = network.get("connections") or {}
    dialled_in = any(row.get("inbound") for row in connections.values())
    foreign = sorted({ip for ip in (_ip_of(a) for a in network.get("observed_addrs") or [])
                      if ip and ip not in ours and not _is_loopback(ip)})
    if foreign and not dialled_in:
        port = next((a.split("/")[4] for a in node.get("addrs", [])
                     if len(a.split("/")) > 4), "7411")
        found.append(Finding(
            "behind_nat", "problem", "listen addresses",
            f"peers see this node as {', '.join(foreign[:3])}, an address it does not listen "
            f"on, and no peer has dialled in: a NAT or firewall stands between them",
            f"forward TCP port {port} to this machine (or open it in the firewall); until "
            "then only nodes this one dials can talk to it"))
    for peer in node.get("peers") or []:
        advertised = [ip for ip in (_ip_of(a) for a in peer.get("addrs") or []) if ip]
        remote = (connections.get(peer.get("peer_id", "")) or {}).get("remote_ips") or []
        if (advertised and all(_is_loopback(ip) for ip in advertised)
                and any(not _is_loopback(ip) for ip in remote)):
            found.append(Finding(
                "peer_loopback_only", "problem", f"peer {_short(peer['peer_id'])}",
                f"it runs on another machine ({remote[0]}) but advertises only loopback "
                "addresses: no other node can dial it",
                "restart it with --listen /ip4/0.0.0.0/tcp/7411 (or its LAN address)"))
    return found


def judge_swarm(node: Mapping[str, Any]) -> list[Finding]:
    """Open swarm exposure and peers refused at the door (another swarm key)."""
    found: list[Finding] = []
    swarm = node.get("swarm") or {}
    beyond_loopback = [a for a in node.get("addrs", []) if not _is_loopback(_ip_of(a) or "")]
    if not swarm.get("private") and beyond_loopback:
        found.append(Finding(
            "open_swarm", "note", "swarm key",
            f"this node runs an OPEN swarm on {beyond_loopback[0]}: anyone who reaches it "
            "may join and run jobs",
            "if that is not meant, restart without --open (a swarm key is created) and join "
            "the others with: calinode invite"))
    failures = (node.get("network") or {}).get("handshake_failures") or {}
    if failures.get("failed"):
        sources = ", ".join(list(failures.get("sources") or {})[-3:]) or "unknown addresses"
        if swarm.get("private"):
            why = "a peer with another swarm key (or none) tries to join"
            fix = ("give that machine this swarm's key: run `calinode invite` here and start "
                   "it with --join <invite> (or copy the key file, --swarm-key)")
        else:
            why = "a peer with a swarm key tries to join this open swarm"
            fix = ("start that machine without --swarm-key/--join to join this open swarm, "
                   "or give this node the key")
        ago = failures.get("last_s_ago")
        recent = ago is None or ago <= HANDSHAKE_RECENT_S
        when = "" if ago is None else f", the last {ago:.0f} s ago"
        found.append(Finding(
            "bad_handshake", "problem" if recent else "note", f"connections from {sources}",
            f"{failures['failed']} inbound connection(s) failed the handshake{when}: {why}",
            fix))
    return found


def judge_clocks(node: Mapping[str, Any]) -> list[Finding]:
    """Peers whose clock is off (estimated from a ping answered with the peer's clock)."""
    found: list[Finding] = []
    for peer in node.get("peers") or []:
        clock = peer.get("clock") or {}
        skew, margin = clock.get("skew_ms"), clock.get("uncertainty_ms", 0)
        if skew is None or abs(skew) - margin <= CLOCK_SKEW_LIMIT_MS:
            continue
        direction = "ahead of" if skew > 0 else "behind"
        found.append(Finding(
            "clock_skew", "problem", f"peer {_short(peer['peer_id'])}",
            f"its clock is {_seconds(skew)} {direction} this node's (+-{_seconds(margin)}); "
            "beyond 5 min other nodes refuse its relayed records and its writes",
            "sync the clock of the machine that is off (NTP: timedatectl set-ntp true), "
            "then restart its node"))
    stale = (node.get("rejected_input") or {}).get("stale_record", 0)
    if stale and not found:
        found.append(Finding(
            "stale_records", "problem", "relayed records",
            f"{stale} relayed record(s) were refused as issued too long ago: some peer's "
            "clock is off by more than 5 min (one this node cannot ping)",
            "run calinode doctor on the other nodes to find it, and sync its clock (NTP)"))
    return found


def judge_refusals(node: Mapping[str, Any]) -> list[Finding]:
    """Refused peer input that points at a misconfigured peer (:data:`MISCONFIG`)."""
    found: list[Finding] = []
    counts: Mapping[str, int] = node.get("rejected_input") or {}
    for reason, fix in MISCONFIG.items():
        if counts.get(reason):
            found.append(Finding("refused_input", "problem", reason,
                                 f"{counts[reason]} piece(s) of peer input refused "
                                 f"({reason})", fix))
    conflict = node.get("identity_conflict") or {}
    if conflict.get("seen"):
        where = ", ".join((conflict.get("addrs") or [])[:3]) or "an unknown address"
        found.append(Finding(
            "identity_conflict", "problem", "peer id",
            f"another node runs with this node's identity (seen {conflict['seen']} times, "
            f"at {where}): a copied home",
            "give one of the two nodes a fresh home (--home), so that it gets its own "
            "identity"))
    return found


def judge_peers(node: Mapping[str, Any]) -> list[Finding]:
    """Peers that are DEAD or degraded (another protocol or version, failing replicas)."""
    found: list[Finding] = []
    for peer in node.get("peers") or []:
        name = f"peer {_short(peer['peer_id'])}"
        if not peer.get("alive"):
            seen = peer.get("last_seen")
            silent = "never answered" if seen is None else f"silent for {seen:.0f} s"
            addr = (peer.get("addrs") or ["its address"])[0]
            found.append(Finding(
                "peer_dead", "problem", name, f"DEAD ({silent})",
                f"check that its node runs and that this machine reaches {addr}; a node "
                "shut down on purpose is forgotten after a while"))
            continue
        theirs, ours = peer.get("protocol_version"), node.get("protocol_version")
        if theirs and ours and theirs != ours:
            found.append(Finding(
                "peer_protocol", "problem", name,
                f"speaks protocol {theirs}, this node {ours}: jobs between them may fail",
                "upgrade the older node so that every node runs the same calinode"))
        elif peer.get("version") and peer.get("version") != node.get("version"):
            found.append(Finding(
                "peer_version", "note", name,
                f"runs calinode {peer['version']}, this node {node.get('version')}",
                "upgrade the older node when convenient"))
    for shard, why in (node.get("sync_failures") or {}).items():
        found.append(Finding("shard_sync_failing", "problem", f"shard {shard}",
                             f"its replica keeps failing to sync: {why}",
                             "see the node's log; check the peers that hold the shard "
                             "(calinode shards)"))
    not_ready = node.get("replicas_not_ready") or {}
    if not_ready:
        found.append(Finding("replicas_not_ready", "note", "replicas",
                             f"{len(not_ready)} replica(s) still catching up",
                             "wait; calinode shards shows their progress"))
    return found


# -- checks of this machine ----------------------------------------------------------------

def judge_models(models: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Model files re-hashed against their manifest (``problems`` from the registry)."""
    return [Finding("model_corrupt", "problem", f"model {m['name']}",
                    f"its files are not what its manifest says: {'; '.join(m['problems'][:3])}",
                    f"reinstall it: calinode models remove {m['name']}, then calinode models "
                    "prepare (or models add), and restart the node")
            for m in models if m.get("problems")]


def judge_disk(disk: Mapping[str, Any] | None) -> list[Finding]:
    if not disk:
        return []
    free, total = disk["free_bytes"], disk["total_bytes"]
    where = disk.get("path", "the home")
    if free < DISK_MIN_FREE:
        return [Finding("disk_low", "problem", where,
                        f"only {free / (1 << 20):.0f} MiB free on the disk of {where}: "
                        "shard writes and model installs will fail",
                        "free some space, or move the home (--home) to a larger disk")]
    if total and free / total < DISK_LOW_FRACTION:
        return [Finding("disk_filling", "note", where,
                        f"{free / total:.1%} of the disk of {where} is free "
                        f"({free / (1 << 30):.1f} GiB)", "keep an eye on it")]
    return []


def _private_file(check: str, label: str, info: Mapping[str, Any] | None) -> list[Finding]:
    if not info or not info.get("exists"):
        return []
    path, mode = info["path"], int(info["mode"])
    found = []
    if mode & 0o077:
        found.append(Finding(check, "problem", path,
                             f"the {label} is readable by others (mode {mode:04o})",
                             f"chmod 600 {path}"))
    if info.get("owner_uid") != info.get("uid"):
        found.append(Finding(check, "problem", path,
                             f"the {label} belongs to uid {info.get('owner_uid')}, not to "
                             f"the user running calinode (uid {info.get('uid')})",
                             f"chown $(id -u) {path} (as root), or run calinode as its owner"))
    return found


def judge_files(local: Mapping[str, Any]) -> list[Finding]:
    found = _private_file("token_permissions", "API token file", local.get("token"))
    for key in local.get("swarm_keys") or []:
        found += _private_file("swarm_key_permissions", "swarm key file", key)
    return found


def judge(node: Mapping[str, Any] | None, local: Mapping[str, Any]) -> list[Finding]:
    """Every finding, problems first. ``node`` is None when no node answered (``local``
    then says why, under ``node_error``)."""
    found: list[Finding] = []
    if node is None:
        found.append(Finding(
            "node_unreachable", "problem", "node",
            f"no node answers: {local.get('node_error', 'unknown error')}",
            "start it (calinode start --home HOME), or point at it with --home/--api"))
    else:
        for rule in (judge_addresses, judge_swarm, judge_clocks, judge_refusals, judge_peers):
            found += rule(node)
    found += judge_models(local.get("models") or [])
    found += judge_disk(local.get("disk"))
    found += judge_files(local)
    return sorted(found, key=lambda f: f.severity != "problem")
