"""``GET /v1/doctor`` and ``POST /v1/bench``: the node's side of ``calinode doctor`` and
``calinode bench``.

``/v1/doctor`` returns *facts*, never verdicts (the judging is pure, in
``node/doctor_rules.py``, run by the CLI): this node's addresses and swarm mode, how peers
reach it (connection directions, observed addresses, failed inbound handshakes), refused peer
input, and every peer of the table with its clock offset. The offset is estimated the NTP way
from one ``ping`` job, which answers with the peer's wall clock: ``skew = peer_time - (sent +
received) / 2``, uncertain by half the round trip. At most :data:`MAX_CLOCK_PROBES` live peers
are pinged, :data:`PROBE_CONCURRENCY` at a time, each within :data:`PROBE_TIMEOUT` seconds.

``/v1/bench`` runs one measurement for ``seconds`` and returns its figures: ``rtt`` (ping round
trips), ``echo`` (a :data:`ECHO_BYTES` payload there and back), ``embed`` (batches of
:data:`EMBED_BATCH` texts) or ``generate`` (:data:`GENERATE_TOKENS` tokens, greedy) on one
peer (this node included) and model. Replies are parsed into their typed views (a bad one is
counted as ``bad_reply`` against the peer). The CLI calls it once per peer and model, so no
single request runs longer than its ``seconds`` plus one job.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calinode.node.api.bodies import field
from calinode.node.api.guard import read_json
from calinode.protocol.builtin_replies import EchoReply, PingReply
from calinode.protocol.errors import BadRequest, CalinodeError, ErrorCode, JobError
from calinode.protocol.job_replies import EmbedReply, GenerateReply

if TYPE_CHECKING:
    from calinode.node.api.node_view import ApiNode

__all__ = ["doctor_routes"]

MAX_CLOCK_PROBES = 64
PROBE_CONCURRENCY = 8
PROBE_TIMEOUT = 3.0
#: what one ``/v1/bench`` request may run for (seconds)
MIN_SECONDS, MAX_SECONDS = 0.2, 120.0
ECHO_BYTES = 1 << 20
EMBED_BATCH = 32
GENERATE_TOKENS = 16
#: at least this many jobs per measurement, however short ``seconds`` is (one generation
#: of a small model takes seconds on a loaded 2-core machine)
MIN_ROUNDS = 1
#: at most this many jobs per measurement (a ping on loopback takes well under 1 ms)
MAX_ROUNDS = 10_000
BENCH_TEXTS = tuple(
    f"Sentence {i} for the benchmark: peers embed short passages like this one, about "
    f"{topic}." for i, topic in enumerate(
        ["rivers", "mountains", "compilers", "bread", "trains", "music", "stars", "gardens"] * 4))
BENCH_PROMPT = "Write one short sentence about the sea:"


async def clock_of(node: ApiNode, peer_id: str) -> dict[str, Any]:
    """``{"skew_ms", "uncertainty_ms", "rtt_ms"}`` of ``peer_id``'s clock, or ``{"error"}``."""
    sent = time.time() * 1000
    try:
        reply, _ = await node.client.call_parsed(peer_id, "ping", {}, PingReply.from_wire,
                                                 timeout=PROBE_TIMEOUT)
    except CalinodeError as exc:
        return {"error": f"{exc.code.value}: {exc.message}"[:200]}
    received = time.time() * 1000
    return {"skew_ms": round(reply.time_ms - (sent + received) / 2),
            "uncertainty_ms": round((received - sent) / 2 + 1),  # + the ms resolution
            "rtt_ms": round(received - sent, 2)}


async def doctor_facts(node: ApiNode) -> dict[str, Any]:
    """Everything ``calinode doctor`` judges that only the running node knows."""
    rows = [row for row in node.peers() if not row["self"]]
    for row in rows:
        entry = node.table.get(row["peer_id"])
        row["protocol_version"] = entry.record.protocol_version if entry else None
        row["clock"] = None
    alive = [row for row in rows if row["alive"]][:MAX_CLOCK_PROBES]
    limiter = trio.CapacityLimiter(PROBE_CONCURRENCY)

    async def probe(row: dict[str, Any]) -> None:
        async with limiter:
            row["clock"] = await clock_of(node, row["peer_id"])

    async with trio.open_nursery() as nursery:
        for row in alive:
            nursery.start_soon(probe, row)
    status = node.status()  # after the probes: what they refused is counted in it
    caps = status["capabilities"]
    config = node.config
    return {
        "peer_id": node.peer_id, "version": status["version"],
        "protocol_version": status["protocol_version"], "home": str(config.home),
        "api": status["api"], "addrs": status["addrs"], "listen": list(config.listen),
        "swarm": {"mode": node.swarm_mode, "private": node.swarm_key is not None,
                  "open": config.open_swarm, "allowlist": len(config.allow),
                  "key_file": str(config.swarm_key) if config.swarm_key else None},
        "network": node.network_facts(),
        "rejected_input": status["rejected_input"],
        "identity_conflict": status["identity_conflict"],
        "sync_failures": status["sync_failures"],
        "replicas_not_ready": status["replicas_not_ready"],
        "models": [{"name": m["name"], "kind": kind, "sha256": m["sha256"]}
                   for kind in ("embed", "generate") for m in caps.get(kind) or []],
        "dead_after": config.dead_after,
        "peers": rows,
        "wall_clock_ms": int(time.time() * 1000),
    }


# -- bench ---------------------------------------------------------------------------------

async def _rounds(seconds: float, one: Any) -> tuple[list[float], list[Any]]:
    """Run ``one()`` (returns (elapsed_ms, figure)) until ``seconds`` passed (at least
    :data:`MIN_ROUNDS` times, at most :data:`MAX_ROUNDS`)."""
    elapsed: list[float] = []
    figures: list[Any] = []
    started = trio.current_time()
    while len(elapsed) < MAX_ROUNDS and (
            len(elapsed) < MIN_ROUNDS or trio.current_time() - started < seconds):
        ms, figure = await one()
        elapsed.append(ms)
        figures.append(figure)
    return elapsed, figures


def _ms_summary(elapsed: list[float]) -> dict[str, float]:
    return {"min": round(min(elapsed), 3), "median": round(statistics.median(elapsed), 3),
            "max": round(max(elapsed), 3)}


async def bench_one(node: ApiNode, what: str, peer_id: str, model: str | None,
                    seconds: float) -> dict[str, Any]:
    """One measurement (module docstring); the figures the CLI prints."""
    timeout = max(120.0, 2 * seconds)  # one job: a generation on a busy machine is slow
    client = node.client
    if what == "rtt":
        async def ping() -> tuple[float, None]:
            _, result = await client.call_parsed(peer_id, "ping", {}, PingReply.from_wire,
                                                 timeout=timeout)
            return result.elapsed_ms, None

        elapsed, _ = await _rounds(seconds, ping)
        return {"count": len(elapsed), "rtt_ms": _ms_summary(elapsed)}
    if what == "echo":
        payload = "x" * ECHO_BYTES

        async def echo() -> tuple[float, None]:
            _, result = await client.call_parsed(
                peer_id, "echo", {"payload": payload},
                lambda data: EchoReply.from_wire(data, sent=payload), timeout=timeout)
            return result.elapsed_ms, None

        elapsed, _ = await _rounds(seconds, echo)
        moved = 2 * ECHO_BYTES * len(elapsed)
        return {"count": len(elapsed), "bytes": moved, "rtt_ms": _ms_summary(elapsed),
                "mib_per_s": round(moved / (1 << 20) / (sum(elapsed) / 1000), 3)}
    if not model:
        raise BadRequest(f"bench {what} needs a model")
    if what == "embed":
        texts = list(BENCH_TEXTS[:EMBED_BATCH])

        async def embed() -> tuple[float, None]:
            _, result = await client.call_parsed(
                peer_id, "embed", {"model": model, "texts": texts},
                lambda data: EmbedReply.from_wire(data, texts=len(texts)), timeout=timeout)
            return result.elapsed_ms, None

        elapsed, _ = await _rounds(seconds, embed)
        count = EMBED_BATCH * len(elapsed)
        return {"count": len(elapsed), "texts": count, "batch": EMBED_BATCH,
                "batch_ms": _ms_summary(elapsed),
                "texts_per_s": round(count / (sum(elapsed) / 1000), 3)}
    if what == "generate":
        params = {"model": model, "prompt": BENCH_PROMPT, "max_tokens": GENERATE_TOKENS,
                  "temperature": 0.0, "seed": 1}

        async def generate() -> tuple[float, int]:
            reply, result = await client.call_parsed(peer_id, "generate", params,
                                                     GenerateReply.from_wire, timeout=timeout)
            return result.elapsed_ms, reply.completion_tokens

        elapsed, tokens = await _rounds(seconds, generate)
        total = sum(tokens)
        if not total:
            raise CalinodeError(f"{model} on {peer_id} generated no tokens")
        return {"count": len(elapsed), "tokens": total, "job_ms": _ms_summary(elapsed),
                "tokens_per_s": round(total / (sum(elapsed) / 1000), 3)}
    raise BadRequest(f"unknown bench {what!r}: rtt, echo, embed or generate")


def doctor_routes(node: ApiNode) -> list[Route]:
    async def doctor(request: Request) -> JSONResponse:
        return JSONResponse(await doctor_facts(node))

    async def bench(request: Request) -> JSONResponse:
        body = await read_json(request)
        what = field(body, "what", str)
        peer_id = field(body, "peer_id", str, node.peer_id)
        model = field(body, "model", str, "") or None
        seconds = field(body, "seconds", float, 2.0)
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise BadRequest(f"seconds must be {MIN_SECONDS}..{MAX_SECONDS}")
        if peer_id != node.peer_id and peer_id not in node.table:
            raise JobError(f"peer {peer_id} is not in this node's peer table (see: calinode "
                           "peers)", code=ErrorCode.UNKNOWN_PEER)
        figures = await bench_one(node, what, peer_id, model, seconds)
        return JSONResponse({"what": what, "peer_id": peer_id, "model": model,
                             "seconds": seconds, **figures})

    return [Route("/v1/doctor", doctor), Route("/v1/bench", bench, methods=["POST"])]
