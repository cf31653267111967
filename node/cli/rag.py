"""``calinode collections|ingest|search|ask|shards``: the RAG commands (via the local API).

``collections create`` without ``--replicas`` takes min(2, live index peers) and says so;
``collections update NAME --replicas N`` changes the replication later. ``ingest`` exits
with :data:`EXIT_DOCS_FAILED` (and a one-line summary on stderr) when any document failed.

``ingest`` reads a folder of .txt/.md files, a JSONL file of ``{"_id", "title", "text",
...metadata}`` (the BEIR corpus format) or ``-`` (JSONL on stdin), sends it in batches and
shows its progress on stderr (``rich``'s bar at a terminal, a plain line a batch otherwise);
``search --queries FILE.jsonl`` prints one JSON line per query. ``ask --agent`` lets the model
search and fetch in a bounded tool loop (node/rag/agent.py), printing each step as it is done.
``shards`` is a ``rich`` table at a terminal, plain lines otherwise (``node/cli/render.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from calinode.node.cli.render import Column, IngestProgress, print_table
from calinode.node.ingest_input import (
    DEFAULT_ENCODING,
    MAX_DOCUMENT_CHARS,
    document_size,
    json_objects,
    prepare,
    read_path,
    send_batches,
)
from calinode.protocol.errors import EXIT_DOCS_FAILED, EXIT_PARTIAL, BadRequest, ConfigError

#: documents per ingest request: the node cuts each request into batches for all its
#: embedders at once, and between two requests they idle, so a request is large (at 64, the
#: pause between requests and the uneven last batches cost about a tenth of ingest speed)
SEND_BATCH = 256
#: How long ``calinode ask`` lets the node work, without and with ``--agent``.
ASK_TIMEOUT = 300.0
AGENT_TIMEOUT = 180.0
#: How long ``calinode search`` lets the node work on one request (all its queries).
CLI_SEARCH_BUDGET = 600.0
SEARCH_EPILOG = f"""\
exit status: 0 when every answer is complete; {EXIT_PARTIAL} when an answer is partial (shards
with no live replica, named on stderr) unless --allow-partial; otherwise the status of the
error's code (see calinode --help).
"""


def _add_collections_parser(sub: Any) -> None:
    """``calinode collections create|update|list|info|drop``."""
    collections = sub.add_parser("collections", help="create, list, inspect, drop collections")
    csub = collections.add_subparsers(dest="collections_command", required=True,
                                      metavar="ACTION")
    create = csub.add_parser("create", help="create a collection")
    create.add_argument("name")
    create.add_argument("--model", help="embedding model to pin (default: the node's)")
    create.add_argument("--shards", type=int, default=16)
    create.add_argument("--replicas", type=int, default=None,
                        help="copies of every shard (default: min(2, live index peers))")
    create.add_argument("--write-quorum", type=int, default=0,
                        help="replicas that must be durable before a write is acknowledged "
                             "(default: a majority)")
    create.add_argument("--hnsw", action="store_true", help="approximate HNSW shards")
    create.add_argument("--admin", action="append", dest="admins", metavar="PEER_ID",
                        help="a peer that may change or drop the collection besides this "
                             "node (its owner); repeatable")
    create.add_argument("--writer", action="append", dest="writers", metavar="PEER_ID",
                        help="in an --open swarm: a peer that may write documents; repeatable")
    create.add_argument("--reader", action="append", dest="readers", metavar="PEER_ID",
                        help="in an --open swarm: a peer that may read documents; repeatable")
    update = csub.add_parser("update", help="change a collection's replication (owner or "
                             "admin only); sync brings the new replicas up")
    update.add_argument("name")
    update.add_argument("--replicas", type=int, required=True)
    update.add_argument("--write-quorum", type=int, default=None,
                        help="replicas that must be durable before a write is acknowledged "
                             "(default: keep the current rule, capped at --replicas)")
    for action, text in (("list", "collections known to the node"),
                         ("info", "one collection's definition"),
                         ("drop", "drop a collection everywhere")):
        parser = csub.add_parser(action, help=text)
        if action != "list":
            parser.add_argument("name")


def _add_ingest_parsers(sub: Any) -> None:
    """``calinode ingest`` and ``calinode delete``."""
    ingest = sub.add_parser("ingest", help="add documents to a collection", epilog=(
        f"A document is at most {MAX_DOCUMENT_CHARS:,} characters (title and text); the node "
        "chunks it, whatever its length up to there. A _id given twice keeps its last "
        f"version (the summary names it). exit status: {EXIT_DOCS_FAILED} when any document "
        "failed (the summary lists them)."))
    ingest.add_argument("path", help="a folder of .txt/.md (one document a file, id: its "
                        "path in the folder), one .txt/.md file (one document, id: its name), "
                        "a .jsonl file of {_id, title, text, ...}, or - for JSONL on stdin")
    ingest.add_argument("--collection", required=True)
    ingest.add_argument("--encoding", default=DEFAULT_ENCODING,
                        help="text encoding of the input (default %(default)s); a file that "
                             "does not decode fails, it is never stored altered")

    delete = sub.add_parser("delete", help="remove documents from a collection")
    delete.add_argument("doc_ids", nargs="+", metavar="DOC_ID")
    delete.add_argument("--collection", required=True)


def _add_query_parsers(sub: Any) -> None:
    """``calinode search``, ``calinode ask`` and ``calinode shards``."""
    search = sub.add_parser("search", help="search a collection", epilog=SEARCH_EPILOG)
    search.add_argument("query", nargs="?")
    search.add_argument("--collection", required=True)
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--queries", help="JSONL file of {_id, text}: one JSON line out each "
                        "(all queries in one request)")
    search.add_argument("--per-doc", action="store_true",
                        help="the k best distinct documents, each by its best chunk")
    search.add_argument("--no-text", action="store_true",
                        help="hits without text and metadata (ids and scores)")
    search.add_argument("--allow-partial", action="store_true",
                        help=f"exit 0 even when shards are missing (else {EXIT_PARTIAL})")

    ask = sub.add_parser("ask", help="answer a question from a collection (RAG)")
    ask.add_argument("question")
    ask.add_argument("--collection", required=True)
    ask.add_argument("-k", type=int, default=5)
    ask.add_argument("--model", help="generation model")
    ask.add_argument("--max-tokens", type=int, default=None,
                     help="tokens to generate (default 256; with --agent: of the whole loop, "
                          "default 1024, at most 4096)")
    ask.add_argument("--agent", action="store_true",
                     help="let the model search and fetch from the collection in a bounded "
                          "tool loop, then answer with the sources it used")
    ask.add_argument("--timeout", type=float, default=None,
                     help="seconds the whole answer may take (default 300; with --agent 180)")
    ask.add_argument("--max-steps", type=int, default=None,
                     help="with --agent: tool steps before the answer (default 4, at most 8)")

    shards = sub.add_parser("shards", help="the shard map: owners, replicas, counts, health")
    shards.add_argument("--collection")


def add_rag_parsers(sub: Any) -> None:
    """The RAG commands; the options every command shares (``--api``, ``--home``, ``--json``,
    ...) come from ``options.add_common_options``."""
    _add_collections_parser(sub)
    _add_ingest_parsers(sub)
    _add_query_parsers(sub)


#: ``calinode shards``: plain lines are ``papers/3   2/2 replicas  1a2b3c4d:120, ...``
SHARD_COLUMNS = (Column("SHARD"), Column("REPLICAS"), Column("HOLDERS (peer:docs, ! unhealthy)",
                                                            gap="  "))


def shard_cells(row: dict[str, Any]) -> tuple[str, ...]:
    """One shard of ``GET /v1/shards`` as table cells: the holders by the end of their peer
    id, each with its document count (``!``: the holder reports a problem)."""
    holders = ", ".join(f"{x['peer'][-8:]}:{x['docs']}{'' if x['healthy'] else '!'}"
                        for x in row["replicas"])
    return (f"{row['collection']}/{row['shard']:<3}",
            f"{row['live_replicas']}/{row['wanted']} replicas", holders)


def cmd_ingest(args: argparse.Namespace, client: Any) -> dict[str, Any]:
    """Read the input (node/ingest_input.py: undecodable files and oversize documents fail
    here, the last version of a repeated ``_id`` wins), send it in batches, sum the replies."""
    read = read_path(args.path, sys.stdin.buffer, args.encoding)
    if not read:
        raise ConfigError(f"{args.path}: no documents found")
    prepared = prepare(read, read_failures=True)
    docs = prepared.docs
    started = time.monotonic()
    summary: dict[str, Any] = {"collection": args.collection, "documents": prepared.read,
                               "chunks": 0, "acknowledged": 0, "added": 0, "replaced": 0,
                               "unchanged": 0, "failed": list(prepared.failed),
                               "duplicates": prepared.duplicates,
                               "duplicate_lines": prepared.duplicate_lines}
    sent = 0
    with IngestProgress(len(docs), quiet=args.json) as progress:
        for batch in send_batches(docs, SEND_BATCH):
            chars = sum(document_size(doc) or 0 for doc in batch)
            # a request of long documents gets longer: at 5000 characters a second (a slow
            # embedder) an 8-million-character document takes 27 minutes
            part = client.ingest(args.collection, batch, timeout=max(600.0, chars / 5000))
            for key in ("chunks", "acknowledged", "added", "replaced", "unchanged"):
                summary[key] += part[key]
            summary["failed"].extend(part["failed"])
            sent += len(batch)
            progress.update(sent, summary["chunks"])
    summary["seconds"] = round(time.monotonic() - started, 2)
    return summary


def collection_summary(data: dict[str, Any]) -> str:
    """``collections info`` for a person: the definition's meaning, the effective write quorum
    once (``quorum``, and ``quorum_rule``: a majority or set explicitly)."""
    rule = "set explicitly" if data.get("quorum_rule") == "set" else "a majority"
    access = "".join(f"\n  {role}: {', '.join(data[role])}"
                     for role in ("admins", "writers", "readers") if data.get(role))
    return (f"{data['name']} (version {data['version']}{', dropped' if data['dropped'] else ''})"
            f"\n  model: {data['model']} ({data['dim']}-d, {data['metric']}, sha256 "
            f"{data['model_sha256'][:16]}...)"
            f"\n  shards: {data['shards']} x {data['replicas']} replicas, {data['index_kind']}"
            f"\n  write quorum: {data['quorum']} ({rule})"
            f"\n  chunks: {data['chunk_tokens']} tokens, {data['chunk_overlap']} overlap"
            f"\n  owner: {data['owner']}{access}")


def cmd_search(args: argparse.Namespace, client: Any) -> int:
    """Print the answers; when one is partial, warn on stderr (one line naming the missing
    shards) and exit ``EXIT_PARTIAL`` unless ``--allow-partial``."""
    options = {"k": args.k, "per_doc": args.per_doc, "text": not args.no_text,
               "timeout": CLI_SEARCH_BUDGET}
    if args.queries and args.query:
        raise BadRequest("give a QUERY or --queries FILE, not both")
    if args.queries:
        with Path(args.queries).open(encoding="utf-8") as fh:
            queries = list(json_objects(fh, args.queries))
        if not queries:
            raise ConfigError(f"{args.queries}: no queries")
        rows = client.search(args.collection, queries=queries, **options)
        for row in rows:
            print(json.dumps(row))
    elif not args.query:
        raise ConfigError("give a QUERY or --queries FILE")
    else:
        rows = client.search(args.collection, args.query, **options)
        data = rows[0]
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print("\n".join(f"{h['score']:.4f}  {h['doc_id']}#{h['chunk']}  "
                            f"{h.get('text', '')[:80]!r}" for h in data["hits"]) or "(no hits)")
    missing = sorted({s for row in rows for s in row["missing_shards"]})
    partial = sum(1 for row in rows if row["partial"])
    if not partial:
        return 0
    print(f"calinode: warning: partial answer{'s' if partial > 1 else ''} ({partial} of "
          f"{len(rows)}): no live replica of shards {missing}", file=sys.stderr)
    return 0 if args.allow_partial else EXIT_PARTIAL


def _collections(args: argparse.Namespace, client: Any) -> tuple[Any, str]:
    """``calinode collections ACTION``: the API's reply and its text for a person."""
    action = args.collections_command
    if action == "create":
        data: Any = client.create_collection(
            args.name, model=args.model, shards=args.shards, replicas=args.replicas,
            write_quorum=args.write_quorum, index_kind="hnsw" if args.hnsw else "flat",
            admins=args.admins, writers=args.writers, readers=args.readers)
        text = (f"created {data['name']}: {data['model']} ({data['dim']}-d), "
                f"{data['shards']} shards x {data['replicas']} replicas, write quorum "
                f"{data['quorum']}" + "".join(f"\n  note: {n}" for n in data["notes"]))
    elif action == "update":
        data = client.update_collection(args.name, replicas=args.replicas,
                                        write_quorum=args.write_quorum)
        text = (f"updated {data['name']} (version {data['version']}): {data['replicas']} "
                f"replicas, write quorum {data['quorum']}; sync brings the replicas up "
                "(watch: calinode shards --collection " + data["name"] + ")"
                + "".join(f"\n  note: {n}" for n in data["notes"]))
    elif action == "list":
        data = client.collections()
        text = "\n".join(f"{c['name']}\t{c['model']}\t{c['shards']} shards x "
                         f"{c['replicas']}" for c in data) or "(no collections)"
    elif action == "info":
        data = client.collection(args.name)
        text = collection_summary(data)
    else:
        data = client.drop_collection(args.name)
        text = f"dropped {args.name}"
    return data, text


def ingest_text(data: dict[str, Any]) -> str:
    """An ingest's summary for a person: counts, the first failures, the replaced lines."""
    failed = "".join(f"\n  {f['_id']}: {f['error']} {f.get('message', '')}"
                     for f in data["failed"][:20])
    text = (f"{data['acknowledged']}/{data['documents']} documents acknowledged "
            f"({data['added']} added, {data['replaced']} replaced, {data['unchanged']} "
            f"unchanged), {data['chunks']} chunks in {data['seconds']} s; "
            f"{len(data['failed'])} failed{failed}")
    if data["duplicates"]:
        shown = ", ".join(data["duplicates"][:20])
        more = len(data["duplicates"]) - 20
        text += (f"\n{data['duplicate_lines']} earlier line(s) replaced by a later line "
                 f"with the same _id (the last one wins): {shown}"
                 + (f" and {more} more" if more > 0 else ""))
    return text


def _ingest_failed(args: argparse.Namespace, data: dict[str, Any], text: str) -> int:
    """The summary goes to stdout; the verdict to stderr, and a status."""
    print(json.dumps(data, indent=2) if args.json else text)
    codes = sorted({str(f["error"]) for f in data["failed"]})
    print(f"calinode: {len(data['failed'])} of {data['documents']} documents failed "
          f"({', '.join(codes)}); first: {data['failed'][0]['_id']}: "
          f"{data['failed'][0].get('message', '')}"[:400], file=sys.stderr)
    return EXIT_DOCS_FAILED


def delete_text(data: dict[str, Any]) -> str:
    """A delete's reply for a person: counts, then each id's outcome."""
    return (f"deleted {len(data['deleted'])}, not found {len(data['not_found'])}, failed "
            f"{len(data['failed'])}"
            + "".join(f"\n  {d}: deleted" for d in data["deleted"])
            + "".join(f"\n  {d}: not found" for d in data["not_found"])
            + "".join(f"\n  {f['_id']}: failed: {f['error']} {f['message']}"
                      for f in data["failed"]))


def step_line(step: dict[str, Any]) -> str:
    """One agent step for a person: ``step 1: search "wing lift" -> 3 hits``."""
    args = " ".join(f"{v!r}" if k == "doc_id" else json.dumps(v)
                    for k, v in step.get("args", {}).items())
    if step.get("error"):
        outcome = f"error: {step['error']}"
    elif step.get("hits") is not None:
        outcome = f"{step['hits']} hit{'' if step['hits'] == 1 else 's'}"
    else:
        outcome = f"{step.get('chars', 0)} characters"
    return f"step {step['step']}: {step['tool']} {args} -> {outcome}"[:300]


def agent_text(data: dict[str, Any]) -> str:
    """The agent's answer for a person: the answer, its numbered sources, the bound hit."""
    sources = "\n".join(f"  [{s['n']}] {s['doc_id']} {s.get('title') or ''}".rstrip()
                        for s in data["sources"]) or "  none"
    bound = (f"\n(stopped by the {data['bound']} bound: answered from what it had)"
             if data.get("bound") else "")
    return f"{data['answer']}\n\nsources:\n{sources}{bound}"


def _ask_agent(args: argparse.Namespace, client: Any) -> tuple[Any, str]:
    """``calinode ask --agent``: each step on a line as it is done, then the answer and its
    sources; with ``--json`` the whole reply as one object."""
    options = {"model": args.model, "max_steps": args.max_steps,
               "max_tokens": args.max_tokens,
               "timeout": AGENT_TIMEOUT if args.timeout is None else args.timeout}
    if args.json:
        return client.agent(args.collection, args.question, **options), ""
    data: dict[str, Any] = {}
    for item in client.agent_stream(args.collection, args.question, **options):
        if "step" in item:
            print(step_line(item["step"]), flush=True)
        elif "done" in item:
            data = item["done"]
    return data, "\n" + agent_text(data)


def _ask(args: argparse.Namespace, client: Any) -> tuple[Any, str]:
    """``calinode ask``: with ``--json`` the whole reply; else the answer streamed as it is
    generated, then the sources."""
    if args.agent:
        return _ask_agent(args, client)
    if args.max_steps is not None:
        raise BadRequest("--max-steps goes with --agent")
    max_tokens = 256 if args.max_tokens is None else args.max_tokens
    timeout = ASK_TIMEOUT if args.timeout is None else args.timeout
    if args.json:
        data = client.ask(args.collection, args.question, k=args.k, model=args.model,
                          max_tokens=max_tokens, timeout=timeout)
        return data, ""
    for item in client.ask_stream(args.collection, args.question, k=args.k,
                                  model=args.model, max_tokens=max_tokens, timeout=timeout):
        if "text" in item:
            print(item["text"], end="", flush=True)
        elif "done" in item:
            data = item["done"]
    print()
    sources = "\n".join(f"  [{s['n']}] {s['doc_id']} {s.get('title') or ''}"
                        for s in data["sources"])
    if data.get("no_sources"):
        sources = "  none: the collection has nothing relevant (no model answer)"
    partial = (f"\n(partial: no live replica of shards {data['missing_shards']})"
               if data["partial"] else "")
    return data, f"\nsources:\n{sources}{partial}"


def cmd_rag(args: argparse.Namespace, client: Any) -> int:
    command = args.command
    if command == "search":
        return cmd_search(args, client)
    if command == "collections":
        data, text = _collections(args, client)
    elif command == "ingest":
        data = cmd_ingest(args, client)
        text = ingest_text(data)
        if data["failed"]:
            return _ingest_failed(args, data, text)
    elif command == "delete":
        data = client.delete(args.collection, args.doc_ids)
        text = delete_text(data)
    elif command == "ask":
        data, text = _ask(args, client)
    else:
        data = client.shards(args.collection)
        if not args.json and data:
            print_table(SHARD_COLUMNS, [shard_cells(row) for row in data], header=False)
            return 0
        text = ""
    print(json.dumps(data, indent=2) if args.json else text)
    return 0
