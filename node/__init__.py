"""calinode.node: the daemon, its CLI and everything that does I/O.

Map of the package. Imports point one way: ``cli`` -> ``client`` (HTTP); ``api`` -> ``rag``
-> ``inference`` -> ``index`` -> ``jobs`` -> ``p2p`` -> ``protocol``; the daemon builds them
all (``tests/unit/test_import_direction.py`` holds the rule and its exceptions).

- ``Node``, ``run_node`` (daemon.py): the root nursery; start-up order; ``node.json``. The
  composition root: it builds every part below.
- ``NodeConfig``, ``load_config`` (config.py): flags > ``CALINODE_*`` env > ``calinode.toml``.
- ``load_or_create_identity``, swarm keys (identity.py): the node key and the PSK on disk;
  the home (home.py, private_files.py, node_file.py), invites (invite.py), who is a member
  (access.py), ``Rejections`` (rejections.py), ``supervised`` (supervision.py),
  ``HybridClock`` (hlc.py): the foundations every layer may use.
- ``CalinodeClient`` (client.py): the local API over HTTP, for the CLI and for scripts.
- ``p2p/``: the libp2p host and its guards, framed streams, signed records, the peer table,
  relayed candidates, identity conflicts, mDNS; ``Membership`` (p2p/membership.py):
  bootstrap, peer exchange, heartbeats, dead-peer detection.
- ``jobs/``: jobs on ``/calinode/job/1.0.0`` (server, admission, client, builtin ``ping`` and
  ``echo``) and where embed and generate run (routing, dispatch).
- ``inference/``: this node's own models off the event loop (services, thread_stream) and the
  ``embed``/``embed_chunks``/``generate`` job kinds (jobs.py).
- ``index/``: the sharded index: ``CollectionBook`` (collections.py), ``PlacementMap``
  (placement.py), ``chunk_text`` (chunking.py), ``merge_topk`` (merge.py), write frames
  (write_frames.py), wire forms (wire.py): pure logic; ``LocalIndex`` (replicas.py): the
  replicas this node hosts; the ``shard.*`` job kinds (shard_jobs.py).
- ``rag/``: the ``Coordinator``: create, ingest, search, ask, replica sync across the swarm
  (see its map). What ingest takes (ingest_input.py: files and documents read, checked and
  cut into requests; the text that is chunked) is a foundation: the CLI, the API and the
  coordinator share it.
- ``api/``: the local HTTP API (OpenAI routes included).
- ``cli/``: the ``calinode`` command.
- ``NodeMetrics`` (metrics.py): ``/metrics`` in the Prometheus format, one registry per node;
  ``readiness`` (readiness.py, pure): what ``/readyz`` answers; ``doctor_rules`` (pure): the
  verdicts of ``calinode doctor`` on a node's facts.
- ``dashboard/``: the web dashboard served by the API: routes, login sessions, static page.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calinode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
