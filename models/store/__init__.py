"""calinode.models.store: the local store of one shard replica: SQLite (the truth, fsync per
write) with FAISS rebuilt from it at open; search, fetch, digest, changes/apply. Blocking code
(call it from a worker thread); imports only :mod:`calinode.protocol`.

Map of the package:

- ``ShardStore`` (shard_store.py): one replica on disk: open/close, writes under the version
  rules, search, fetch, the listings replica sync compares, checks and statistics.
- ``DocWrite``, ``ChunkWrite``, ``DocRecord``, ``Hit``, ``StoredChunk``, ``UpsertResult``
  (records.py): what is written, exchanged between replicas, found and reported.
- ``chunk_faiss_id``, ``DocState``, ``resolve``, ``DigestSum``, ``shard_digest`` (digest.py):
  what replicas compare and the rule by which they converge (pure).
- ``incoming_doc``, ``check_queries`` (validation.py): input refused with ``BAD_REQUEST``
  before anything is written.
- ``VectorIndex`` (vector_index.py): the FAISS index (flat or HNSW) keyed by faiss id.
- ``ranked`` (ranking.py): the top k of a query in the one ranking order, searching deeper
  until the cut is settled.
- ``write_items``, ``read_records`` ... (sql.py): the schema and every query;
  ``lock_folder`` (folder.py): the store's folder and its lock; ``index_problems``,
  ``sql_problems`` (checks.py): what ``ShardStore.check`` looks for.
"""
