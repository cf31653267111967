"""calinode.node.index: the sharded index on this node: the collections it knows, where each
document and shard goes, how documents are cut and shard writes framed, how per-shard hits
merge, and the shard replicas it hosts with the ``shard.*`` job kinds over them. Imports
:mod:`calinode.node.jobs` and below (never ``inference``, ``rag`` or ``api``).

Map of the package:

- ``CollectionBook`` (collections.py): the collection definitions this node knows, on disk and
  in memory, and how they converge (signed by their owner, capped).
- ``PlacementMap``, ``shard_of`` (placement.py): which shard holds a document and which peers
  own each shard (pure).
- ``chunk_text``, ``text_pieces`` (chunking.py): documents cut into chunks (pure).
- ``merge_topk`` (merge.py): the exact merge of per-shard top-k lists (pure).
- ``write_rounds``, ``write_groups`` (write_frames.py): shard writes cut by size so each fits
  a frame (pure).
- ``docs_to_wire``, ``records_from_wire``, ``fetch_reply`` (wire.py): shard documents in their
  wire form, and the page of a ``shard.fetch`` reply.
- ``LocalIndex`` (replicas.py): the replicas this node hosts (open, ready, recovering, drop,
  purge), each store called in a worker thread under its own lock.
- ``register_index_jobs``, ``ShardJobs`` (shard_jobs.py): the ``shard.*`` job kinds.
"""
