"""calinode.node: the daemon, its CLI and everything that does I/O.

Map of the package:

- ``Node``, ``run_node`` (daemon.py): the root nursery; start-up order; ``node.json``.
- ``NodeConfig``, ``load_config`` (config.py): flags > ``CALINODE_*`` env > ``calinode.toml``.
- ``load_or_create_identity``, swarm keys (identity.py): the node key and the PSK on disk.
- ``build_host``, ``guarded``, ``PeerGate`` (host.py): a Noise-only libp2p host and the guards
  that keep one bad stream or an unknown peer from reaching, or killing, the node.
- ``FramedStream`` (framed_stream.py): protocol messages over a stream, reads under deadlines.
- ``PeerTable`` (peer_table.py): pure freshness and liveness logic for capability records.
- ``RecordSigner``, ``verify_record`` (records.py): signed capability records.
- ``Membership`` (membership.py): bootstrap, peer exchange, heartbeats, dead-peer detection.
- ``JobServer``, ``JobRegistry`` (job_server.py), ``JobClient`` (job_client.py): jobs on
  ``/calinode/job/1.0.0``; ``ping`` and ``echo`` (builtin_jobs.py).
- ``LocalModels`` (local_models.py): this node's embedders (merged batches) and generators,
  off the event loop; ``run_streaming`` (thread_stream.py) carries tokens out of a thread.
- ``embed``/``generate``/``embed_chunks`` job kinds (inference_jobs.py); ``Dispatcher``
  (dispatch.py) routes them by the pure rules of routing.py.
- ``CollectionBook`` (collections_book.py), ``PlacementMap`` (placement.py), ``chunk_text``
  (chunking.py), ``merge_topk`` (result_merge.py): the pure logic of the sharded index.
- ``LocalIndex`` and the ``shard.*`` job kinds (local_index.py): the replicas this node hosts.
- ``Coordinator`` (rag.py): create, ingest, search, ask, replica sync across the swarm.
- ``serve_api`` (api.py) with inference_api.py, rag_api.py: the local HTTP API (OpenAI routes
  included); ``CalinodeClient`` (client.py) talks to it.
- ``run_mdns`` (mdns.py): optional LAN discovery.
- ``main`` (cli.py, cli_models.py, cli_rag.py): the ``calinode`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calinode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
