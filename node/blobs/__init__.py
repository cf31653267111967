"""Models travel by content address: serving and pulling model blobs between peers.

- ``catalog.py``: :class:`ModelCatalog`, this node's installed models as transfer manifests
  (chunk hashes computed once per model, off the event loop) and chunk reads.
- ``wire.py``: one request frame, one reply frame over a ``/calinode/blob/1.0.0`` stream,
  every read and write under a deadline.
- ``server.py``: :class:`BlobServer`, the stream handler: bounded concurrent transfers, an
  optional bytes/s cap, file reads in worker threads, ``UNKNOWN_MODEL`` for unknown hashes.
- ``pull_state.py``: :class:`ChunkBook` (which chunks are verified, pending, who sent a bad one;
  pure) and :class:`PartialFolder` (the partial files and the verified-chunk list on disk, so a
  crash or ``kill -9`` resumes).
- ``puller.py``: :func:`pull_model`, fetching a model's chunks from several peers at once,
  verifying each on arrival and installing the model once every whole file checks.
- ``swarm_models.py``: which peers advertise which models (``models list --swarm``, pulls),
  and the node's :class:`ModelPulls` (pulls in progress, for ``/readyz``).

The wire views are in ``calinode.protocol.blobs``.
"""
