"""``calinode bench``: measure this node and its peers, through the node.

For every live peer of the node's table (the node itself included) and every model it
advertises: ``embed`` texts/s (batches of 32) and ``generate`` tokens/s (16 greedy tokens a
job); for every other live peer: ``rtt`` (ping round trips) and ``echo`` throughput (1 MiB
there and back). Each measurement is one ``POST /v1/bench`` (``node/api/doctor_routes.py``)
that runs for ``--seconds`` (at least one job), so the whole run takes a few seconds by
default. The figures are the node's own timings of each job, so the HTTP hop to the CLI is
not in them.

Exit status: 0 when every measurement ran; 3 (``EXIT_PARTIAL``) when some failed (the table
and the JSON say which, with the error code).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

from calinode.node.cli.render import Column, print_table
from calinode.protocol.errors import EXIT_PARTIAL, CalinodeError

__all__ = ["add_bench_parser", "bench_cells", "cmd_bench", "plan"]

DEFAULT_SECONDS = 0.5

COLUMNS = (Column("PEER", 20), Column("WHAT", 9), Column("MODEL", 18), Column("FIGURE", 14, ">"),
           Column("DETAIL", gap="  "))


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="measure models, round trips and throughput",
                           description="Measure embed texts/s and generate tokens/s per model "
                           "on this node and each peer that serves it, and the round trip and "
                           "throughput to each peer. Exit status 3 when a measurement failed.")
    bench.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                       help="how long each measurement runs (at least one job each)")


def plan(peers: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The measurements for ``GET /v1/peers`` rows: models on every live peer, rtt and echo
    to every live peer but this node."""
    for row in peers:
        if not row.get("alive"):
            continue
        caps = row.get("capabilities") or {}
        for kind in ("embed", "generate"):
            for model in caps.get(kind) or []:
                yield {"what": kind, "peer_id": row["peer_id"], "model": model["name"],
                       "self": row["self"]}
        if not row["self"]:
            yield {"what": "rtt", "peer_id": row["peer_id"], "model": None, "self": False}
            yield {"what": "echo", "peer_id": row["peer_id"], "model": None, "self": False}


def _figure(result: dict[str, Any]) -> tuple[str, str]:
    what = result["what"]
    if "error" in result:
        return "failed", result["error"]
    if what == "embed":
        return (f"{result['texts_per_s']:.1f} texts/s",
                f"{result['count']} batches of {result['batch']}, median "
                f"{result['batch_ms']['median']:.1f} ms")
    if what == "generate":
        return (f"{result['tokens_per_s']:.1f} tok/s",
                f"{result['tokens']} tokens in {result['count']} jobs, median "
                f"{result['job_ms']['median']:.0f} ms")
    if what == "rtt":
        rtt = result["rtt_ms"]
        return (f"{rtt['median']:.2f} ms",
                f"{result['count']} pings, min {rtt['min']:.2f} max {rtt['max']:.2f} ms")
    return (f"{result['mib_per_s']:.1f} MiB/s",
            f"{result['count']} x 1 MiB there and back, median "
            f"{result['rtt_ms']['median']:.1f} ms")


def bench_cells(result: dict[str, Any]) -> tuple[str, ...]:
    peer = "self" if result.get("self") else result["peer_id"][:8] + ".." + result["peer_id"][-8:]
    figure, detail = _figure(result)
    return (peer, result["what"], result.get("model") or "-", figure, detail)


def cmd_bench(args: argparse.Namespace, client_factory: Any) -> int:
    if not 0.2 <= args.seconds <= 120:
        from calinode.protocol.errors import BadRequest

        raise BadRequest("--seconds must be 0.2 to 120")
    results: list[dict[str, Any]] = []
    with client_factory(args) as client:
        peers = client.peers()
        for item in plan(peers):
            try:
                figures = client.bench(item["what"], peer_id=item["peer_id"],
                                       model=item["model"], seconds=args.seconds,
                                       timeout=max(150.0, 4 * args.seconds))
                results.append({**figures, "self": item["self"]})
            except CalinodeError as exc:
                results.append({**item, "error": f"{exc.code.value}: {exc.message}"[:300]})
    node = next((row["peer_id"] for row in peers if row["self"]), "")
    if args.json:
        print(json.dumps({"node": node, "seconds": args.seconds, "results": results}, indent=2))
    else:
        print_table(COLUMNS, [bench_cells(r) for r in results],
                    empty="nothing to measure: no model here and no live peer")
    return EXIT_PARTIAL if any("error" in r for r in results) else 0
