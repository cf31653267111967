"""What a relayed-record flood costs membership, in process (no network, one core).

    python bench/bench_flood.py [--senders 50] [--per-sender 100] [--rounds 5] [--profile]

The integration test ``tests/integration/test_hostile_daemon_flood.py`` measures the daemon's
CPU under the flood from ``/proc``; this script isolates the part membership owns, so that it
can be profiled: every round, each of ``--senders`` hostile peers sends one peer exchange (its
own fresh record plus ``--per-sender`` signed records of peers nobody has met, the same ones
every round), which is decoded from its frame with ``META_LIMITS`` and absorbed, and the reply
exchange is built and encoded, as ``Membership.rpc_meta`` does. Prints the CPU seconds of each
round (the first one verifies everything; later rounds show what a resent record costs), and
with ``--profile`` the top of a cProfile of the later rounds.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair

from calinode.node.p2p.host import PeerPolicy, build_host
from calinode.node.p2p.membership import Membership
from calinode.node.p2p.peer_table import PeerTable
from calinode.node.p2p.records import RecordSigner
from calinode.protocol.codec import pack
from calinode.protocol.framing import encode_frame
from calinode.protocol.ids import PROTOCOL_VERSION
from calinode.protocol.messages import Load, MessageDecoder, PeerExchange, encode_message
from calinode.protocol.records import META_LIMITS


def _record(signer: RecordSigner, addrs: tuple[str, ...]) -> dict[str, Any]:
    return signer.issue(addrs=addrs, capabilities={"jobs": []},
                        load=Load(in_flight=0, queue_depth=0)).to_wire()


def build_senders(senders: int, per_sender: int) -> list[tuple[RecordSigner, list[dict[str, Any]]]]:
    """Per sender: its signer (a fresh own record every round) and its relayed records."""
    out = []
    for _ in range(senders):
        sender = RecordSigner(create_new_key_pair(), version="0.1.0",
                              protocol_version=PROTOCOL_VERSION)
        relayed = []
        for i in range(per_sender):
            signer = RecordSigner(create_new_key_pair(), version="0.1.0",
                                  protocol_version=PROTOCOL_VERSION)
            relayed.append(_record(signer, (f"/ip4/127.0.0.1/tcp/{1 + i % 8}/p2p/"
                                            f"{signer.peer_id}",)))
        out.append((sender, relayed))
    return out


def run(args: argparse.Namespace) -> None:
    key = create_new_key_pair()
    host = build_host(key)
    me = RecordSigner(key, version="0.1.0", protocol_version=PROTOCOL_VERSION)
    table = PeerTable(me.peer_id, dead_after=30, drop_after=300)
    membership = Membership(
        host, table, PeerPolicy(),
        lambda: me.issue(addrs=("/ip4/127.0.0.1/tcp/1",), capabilities={"jobs": []},
                         load=Load(in_flight=0, queue_depth=0)),
        bootstrap=(), heartbeat_interval=1.0)
    senders = build_senders(args.senders, args.per_sender)
    profile = cProfile.Profile() if args.profile else None

    verdicts = getattr(membership, "verdicts", None)  # None: a version before the cache

    def one_round() -> None:
        for signer, relayed in senders:
            own = _record(signer, ())
            # packed without limits, as the hostile peer does (the victim scans it on receipt)
            data = encode_frame(pack({"t": "px", "record": own, "known": relayed}),
                                META_LIMITS)
            decoder = MessageDecoder(META_LIMITS)
            decoder.feed(data)
            message = decoder.next_message()
            assert isinstance(message, PeerExchange)
            membership.absorb(message, signer.peer_id)
            encode_message(membership._outgoing(), META_LIMITS)

    async def main() -> None:
        for n in range(args.rounds):
            if profile is not None and n == 1:
                profile.enable()
            started = time.process_time()
            one_round()
            print(f"round {n + 1}: {time.process_time() - started:.3f} s CPU "
                  f"({args.senders} x {args.per_sender} relayed records); "
                  f"candidates {len(membership.candidates)}, "
                  f"rejections {membership.rejections.snapshot()}"
                  + (f", verdicts {verdicts.hits} hits / {verdicts.misses} misses"
                     if verdicts is not None else ""), flush=True)
        if profile is not None:
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(35)

    trio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--per-sender", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
