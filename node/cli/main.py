"""The ``calinode`` command.

``start`` runs the daemon in the foreground; ``keygen`` writes a swarm key; ``id`` prints this
home's peer id; ``status``, ``peers`` and ``ping`` talk to a running node's local API. Every
client command takes ``--json`` for scripts. An error prints one line and exits with the status
of its code (``protocol/errors.py``: ``EXIT_STATUS``, shown in ``calinode --help``); :func:`main`
is the one place that maps them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calinode.node import __version__
from calinode.node.cli.bench import add_bench_parser, cmd_bench
from calinode.node.cli.dashboard import add_dashboard_parser, cmd_dashboard
from calinode.node.cli.doctor import add_doctor_parser, cmd_doctor
from calinode.node.cli.errors import EXIT_BROKEN_PIPE, report
from calinode.node.cli.log_setup import configure_logging
from calinode.node.cli.models import add_models_parser, cmd_models
from calinode.node.cli.options import CalinodeParser, add_common_options
from calinode.node.cli.rag import add_rag_parsers, cmd_rag
from calinode.node.cli.render import Column, print_table
from calinode.protocol.errors import BadRequest, exit_status_table

EXAMPLES = """\
first node:     calinode start
another node:   calinode start --bootstrap /ip4/192.168.1.5/tcp/7411/p2p/12D3KooW...
private swarm:  calinode keygen --out swarm.key   (copy it to every node)
                calinode start --swarm-key swarm.key
inspect:        calinode status; calinode peers --json; calinode ping 12D3KooW...
diagnose:       calinode doctor (what to fix); calinode bench (models, round trips)

options that every command takes, before or after its name: --home DIR, --json,
--debug (a traceback with any error), --verbose (library log lines); --api HOST:PORT
and --token for the commands that use a node's API.

exit status (an error prints one line "calinode: error: CODE: message; what to do next"
on stderr; a bug prints "internal error ...; please report it with the log at PATH"):
""" + exit_status_table() + f"\n  {EXIT_BROKEN_PIPE}  the reader of the output went away\n"


def _add_start_parser(sub: Any) -> None:
    """``calinode start``: every flag of the daemon (the node's configuration)."""
    start = sub.add_parser("start", help="run a node in the foreground",
                           description="Run a calinode node until Ctrl-C or SIGTERM. Every "
                           "flag can also be set as CALINODE_<FLAG> or in calinode.toml in "
                           "the home (flags win over env, env over the file). With --json: "
                           "one JSON line on stdout once ready (peer_id, addrs, api, ...).")
    start.add_argument("--home", help="state folder: identity, config, node.json "
                       "(default $CALINODE_HOME or ~/.local/share/calinode)")
    start.add_argument("--listen", action="append", metavar="MULTIADDR",
                       help="address to listen on, repeatable (default /ip4/0.0.0.0/tcp/7411)")
    start.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                       help="a peer to join, /ip4/HOST/tcp/PORT/p2p/PEER_ID; repeatable")
    start.add_argument("--api", metavar="HOST:PORT",
                       help="serve the local HTTP API here (default 127.0.0.1:7412)")
    start.add_argument("--join", metavar="INVITE",
                       help="join a private swarm with the invite another node printed "
                            "(calinode invite): its addresses and swarm key in one paste")
    start.add_argument("--swarm-key", metavar="FILE",
                       help="private swarm key file (calinode keygen); default: the home's "
                            "swarm.key, created on first start when listening beyond loopback")
    start.add_argument("--open", dest="open_swarm", action="store_const", const=True,
                       default=None, help="run an OPEN swarm: anyone who reaches the port may "
                       "join (default: private whenever listening beyond loopback)")
    start.add_argument("--allow", action="append", metavar="PEER_ID",
                       help="serve only these peers (repeatable; default: everyone with the key)")
    start.add_argument("--trust", action="append", metavar="PEER_ID",
                       help="in an --open swarm: a peer this node may send documents and "
                            "prompts to (repeatable; in a private swarm every member may)")
    start.add_argument("--mdns", action="store_const", const=True, default=None,
                       help="discover peers on the LAN with mDNS")
    start.add_argument("--mdns-interface", action="append", dest="mdns_interfaces",
                       metavar="IP", help="restrict mDNS to this interface address; repeatable")
    start.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="log level (default info; --debug: debug)")
    start.add_argument("--heartbeat-interval", type=float, metavar="SECONDS",
                       help="seconds between peer exchanges (default 1)")
    start.add_argument("--dead-after", type=float, metavar="SECONDS",
                       help="mark a silent peer dead after this long (default 6)")
    start.add_argument("--embed-model", action="append", dest="embed_models", metavar="NAME",
                       help="embedding model to load, repeatable (default minilm-l6-int8)")
    start.add_argument("--gen-model", action="append", dest="gen_models", metavar="NAME",
                       help="generation model to load, repeatable (default smollm2-135m)")
    start.add_argument("--no-models", action="store_const", const=True, default=None,
                       help="load no model: route every job to peers")
    start.add_argument("--threads", type=int, help="compute threads per model (default: all)")
    start.add_argument("--stream-interval", type=float, metavar="SECONDS",
                       help="send streamed tokens at most this often, grouped (default 0.1; "
                            "0: every token on its own, costs tokens/s on a busy machine)")
    start.add_argument("--index", action="store_const", const=True, default=None,
                       help="host shard replicas of collections")
    start.add_argument("--replica-gc-after", type=float, metavar="SECONDS",
                       help="delete a replica this node no longer owns once every owner has "
                            "held the same copy this long (default 600; 0: keep forever)")
    start.add_argument("--blob-max-transfers", type=int, metavar="N",
                       help="model chunks served to peers at once (default 4; more are "
                            "refused OVERLOADED and fetched elsewhere)")
    start.add_argument("--blob-rate", type=int, metavar="BYTES_PER_S",
                       help="cap the bytes/s of models served to peers (default 0: no cap)")
    start.add_argument("--test-only-clock-offset", type=float, default=0.0,
                       help=argparse.SUPPRESS)  # TEST ONLY: daemon.shift_wall_clock_for_tests
    start.add_argument("--test-only-corrupt-chunks", action="store_const", const=True,
                       default=None, help=argparse.SUPPRESS)  # TEST ONLY: node/blobs/server.py
    start.add_argument("--test-only-embed-slowdown", type=float, metavar="FACTOR",
                       help=argparse.SUPPRESS)  # TEST ONLY: EmbedService.test_only_slowdown


def _add_inference_parsers(sub: Any) -> None:
    """``calinode embed`` and ``calinode generate``."""
    embed = sub.add_parser("embed", help="embed texts (on this node or a peer that can)")
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--model", help="embedding model (default: the node's)")
    kind = embed.add_mutually_exclusive_group()
    kind.add_argument("--query", dest="input_type", action="store_const", const="query",
                      help="embed as search queries (the model's query prefix)")
    kind.add_argument("--passage", dest="input_type", action="store_const", const="passage",
                      help="embed as documents (default)")
    embed.add_argument("--dimensions", type=int, help="keep the first N dimensions")
    embed.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")

    generate = sub.add_parser("generate", help="generate text (streamed with --stream)")
    generate.add_argument("prompt", metavar="PROMPT")
    generate.add_argument("--model", help="generation model (default: the node's)")
    generate.add_argument("--completion", action="store_true",
                          help="send PROMPT as a raw completion prompt instead of a chat turn")
    generate.add_argument("--max-tokens", type=int, default=256,
                          help="most tokens to generate")
    generate.add_argument("--temperature", type=float,
                          help="sampling temperature (default: the model's)")
    generate.add_argument("--seed", type=int, help="sampling seed, for repeatable output")
    generate.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    generate.add_argument("--timeout", type=float, default=300.0, help="seconds to wait")


def build_parser() -> argparse.ArgumentParser:
    parser = CalinodeParser(
        prog="calinode",
        description="Peer-to-peer worker daemon for decentralized RAG.", epilog=EXAMPLES)
    parser.add_argument("--version", action="version", version=f"calinode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_start_parser(sub)
    _add_inference_parsers(sub)
    add_models_parser(sub)
    add_rag_parsers(sub)
    add_doctor_parser(sub)
    add_bench_parser(sub)

    keygen = sub.add_parser("keygen", help="write a new private swarm key")
    keygen.add_argument("--out", required=True, metavar="FILE", help="where to write (mode 0600)")

    sub.add_parser("id", help="print this home's peer id (creating the identity)")

    sub.add_parser("token", help="print the local API's bearer token (for scripts and "
                   "OpenAI clients: api_key=<token>)")

    sub.add_parser("invite", help="print the one-paste invite that joins another "
                   "machine to this node's private swarm (calinode start --join ...)")

    sub.add_parser("status", help="show the running node")
    add_dashboard_parser(sub)
    sub.add_parser("peers", help="list the peer table of the running node")
    ping = sub.add_parser("ping", help="round-trip a ping job to a peer")
    ping.add_argument("peer_id", metavar="PEER_ID")
    ping.add_argument("-c", "--count", type=int, default=3, help="pings to send")
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds per ping")
    add_common_options(parser)
    return parser


def _emit(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


def cmd_start(args: argparse.Namespace) -> int:
    import functools

    import trio

    from calinode.node.config import load_config
    from calinode.node.daemon import run_node, shift_wall_clock_for_tests

    if args.no_models and (args.embed_models or args.gen_models):
        given = "--embed-model" if args.embed_models else "--gen-model"
        raise BadRequest(f"{given} and --no-models contradict each other: give one of them")
    flags = {key: value for key, value in vars(args).items() if key != "command"}
    if args.debug and not args.log_level:
        flags["log_level"] = "debug"
    config = load_config(flags)
    configure_logging(config.log_level, verbose=args.verbose or args.debug, native=True)
    shift_wall_clock_for_tests(args.test_only_clock_offset)  # 0 (nothing) outside tests
    trio.run(functools.partial(run_node, config, ready_json=args.json))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from calinode.node.identity import write_swarm_key

    path = Path(args.out).expanduser()
    write_swarm_key(path)
    _emit({"swarm_key": str(path)}, args.json,
          f"wrote swarm key {path} (mode 0600); copy it to every node and start them with "
          f"--swarm-key {path}")
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    from calinode.node.config import resolve_home
    from calinode.node.identity import load_or_create_identity, peer_id_of

    home = resolve_home(args.home, os.environ)
    peer_id = peer_id_of(load_or_create_identity(home))
    _emit({"peer_id": peer_id, "home": str(home)}, args.json, peer_id)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from calinode.node.config import resolve_home
    from calinode.node.private_files import load_or_create_api_token

    home = resolve_home(args.home, os.environ)
    token = load_or_create_api_token(home)
    _emit({"token": token, "home": str(home)}, args.json, token)
    return 0


def _client(args: argparse.Namespace) -> Any:
    from calinode.node.client import CalinodeClient

    return CalinodeClient.from_home(args.home, api=args.api, token=getattr(args, "token", None))


def cmd_invite(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = client.invite()
    if data["invite"] is None:
        text = ("this node runs an open swarm; join it with: calinode start --bootstrap "
                + (data.get("bootstrap") or ["<address>"])[0])
    else:
        text = f"calinode start --join {data['invite']}"
    _emit(data, args.json, text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = client.status()
    caps = data["capabilities"]
    text = "\n".join([
        f"peer id   {data['peer_id']}",
        f"version   {data['version']} (protocol {data['protocol_version']})",
        *(f"address   {addr}" for addr in data["addrs"]),
        f"api       {data['api']}",
        f"peers     {data['peers']['alive']} alive of {data['peers']['known']} known",
        f"swarm     {data.get('swarm', '?')}",
        f"jobs      {', '.join(caps['jobs'])}; {data['load']['in_flight']} in flight, "
        f"{data['jobs']['served']} served, {data['jobs']['failed']} failed",
        f"uptime    {data['uptime_s']} s",
    ])
    refused = data.get("rejected_input") or {}
    if refused:
        text += "\nrefused   " + ", ".join(f"{n} {reason}" for reason, n in refused.items())
        text += " (peer input this node dropped; see its log)"
    conflict = data.get("identity_conflict") or {}
    if conflict.get("seen"):
        text += (f"\nWARNING   another node runs with this node's identity (seen "
                 f"{conflict['seen']} times, at {', '.join(conflict.get('addrs', [])[:3]) or '?'}"
                 "): a copied home? give one of them a fresh --home")
    for shard, why in (data.get("sync_failures") or {}).items():
        text += f"\nfailing   shard {shard}: {why}"
    _emit(data, args.json, text)
    return 0


def capability_summary(caps: dict[str, Any]) -> str:
    """A peer's capabilities in a few words: ``embed:minilm-l6-int8 gen:smollm2-135m index``
    (``-`` for a peer that serves only the built-in jobs)."""
    words = [f"embed:{m.get('name', '?')}" for m in caps.get("embed") or []]
    words += [f"gen:{m.get('name', '?')}" for m in caps.get("generate") or []]
    if caps.get("index"):
        words.append("index")
    return " ".join(words) or "-"


#: ``calinode peers``: plain lines keep these widths (scripts cut them)
PEER_COLUMNS = (Column("PEER ID", 54), Column("ALIVE", 6), Column("SEEN", 7, ">"),
                Column("RTT ms", 7, ">"), Column("JOBS", 5, ">"),
                Column("ADDRESS", 46, gap="  "), Column("CAPABILITIES", gap="  "))


def peer_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """One row of ``calinode peers`` (a row of ``GET /v1/peers``) as its table's cells."""
    seen = "self" if row["self"] else (
        "-" if row["last_seen"] is None else f"{row['last_seen']:.1f}s")
    rtt = "-" if row["rtt_ms"] is None else f"{row['rtt_ms']:.1f}"
    addr = row["addrs"][0] if row["addrs"] else "-"
    return (row["peer_id"], "yes" if row["alive"] else "DEAD", seen, rtt,
            str(row["load"]["in_flight"]), addr,
            capability_summary(row.get("capabilities") or {}))


def cmd_peers(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = client.peers()
    if args.json:
        _emit(rows, True, "")
    else:
        print_table(PEER_COLUMNS, [peer_cells(row) for row in rows])
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = client.ping(args.peer_id, count=args.count, timeout=args.timeout)
    rtts = data["rtt_ms"]
    text = "\n".join([*(f"pong from {data['served_by']}: {rtt:.2f} ms" for rtt in rtts),
                      f"{len(rtts)} pings, median {sorted(rtts)[len(rtts) // 2]:.2f} ms"])
    _emit(data, args.json, text)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    with _client(args) as client:
        data = client.embed(args.texts, model=args.model, input_type=args.input_type or "passage",
                            dimensions=args.dimensions, timeout=args.timeout)
    out = {key: data[key] for key in ("model", "dim", "vectors", "served_by", "sha256",
                                      "truncated")}
    lines = [f"{data['model']} ({data['dim']}-d) served by {', '.join(data['served_by'])}"]
    for text, vector in zip(args.texts, data["vectors"], strict=True):
        lines.append(f"{text[:40]!r}: [{', '.join(f'{v:.4f}' for v in vector[:6])}, ...]")
    if data["truncated"]:
        lines.append(f"truncated to the model's token limit: inputs {data['truncated']}")
    _emit(out, args.json, "\n".join(lines))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"model": args.model, "max_tokens": args.max_tokens,
                               "temperature": args.temperature, "seed": args.seed,
                               "timeout": args.timeout}
    if args.completion:
        request["prompt"] = args.prompt
    else:
        request["messages"] = [{"role": "user", "content": args.prompt}]
    with _client(args) as client:
        if not args.stream:
            data = client.generate(**request)
            _emit(data, args.json, data["text"])
            return 0
        for item in client.generate_stream(**request):
            if "text" in item:
                if args.json:
                    print(json.dumps(item), flush=True)
                else:
                    print(item["text"], end="", flush=True)
            elif "done" in item:
                done = item["done"]
                if args.json:
                    print(json.dumps(item), flush=True)
                else:
                    print(f"\n[{done['finish_reason']}, {done['usage']['completion_tokens']} "
                          f"tokens, served by {done['served_by']}]", file=sys.stderr)
    return 0


def cmd_rag_command(args: argparse.Namespace) -> int:
    from calinode.protocol.errors import ApiError, ErrorCode

    with _client(args) as client:
        try:
            return cmd_rag(args, client)
        except ApiError as exc:
            if (exc.code is not ErrorCode.UNKNOWN_COLLECTION
                    or getattr(args, "collections_command", None) != "drop"):
                raise
            # the node's message suggests creating the collection: not for a drop
            known = exc.message.split("; create it")[0]
            raise ApiError(f"{known}; nothing to drop (see: calinode collections list)",
                           code=exc.code) from None


def cmd_doctor_command(args: argparse.Namespace) -> int:
    return cmd_doctor(args, _client)


def cmd_bench_command(args: argparse.Namespace) -> int:
    return cmd_bench(args, _client)


COMMANDS = {"start": cmd_start, "keygen": cmd_keygen, "id": cmd_id, "token": cmd_token,
            "status": cmd_status, "invite": cmd_invite,
            "peers": cmd_peers, "ping": cmd_ping, "embed": cmd_embed, "generate": cmd_generate,
            "models": cmd_models, "collections": cmd_rag_command, "ingest": cmd_rag_command,
            "search": cmd_rag_command, "delete": cmd_rag_command, "ask": cmd_rag_command,
            "shards": cmd_rag_command, "dashboard": cmd_dashboard,
            "doctor": cmd_doctor_command, "bench": cmd_bench_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every error goes through ``errors.report`` (one line, the status
    of its code). A usage error exits 2 (``EXIT_USAGE``) inside ``parse_args``."""
    args = build_parser().parse_args(argv)  # options.finish_namespace included
    if args.command != "start":  # start sets up its own logging from its configuration
        configure_logging("debug" if args.debug else "warning",
                          verbose=args.verbose or args.debug)
    try:
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as exc:
        return report(exc, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
