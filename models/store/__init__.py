"""calinode.models.store: the local store of one shard replica: SQLite (the truth, fsync per
write) with FAISS rebuilt from it at open; search, fetch, digest, changes/apply. Blocking code
(call it from a worker thread); imports only :mod:`calinode.protocol`.

Map of the package:

- ``ShardStore`` (shard_store.py): one replica on disk.
- ``chunk_faiss_id``, ``DocState``, ``resolve``, ``DigestSum``, ``shard_digest`` (digest.py):
  what replicas compare and the rule by which they converge (pure).
"""
