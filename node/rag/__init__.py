"""calinode.node.rag: collections across the swarm: create, ingest, search, ask, replica sync.
Imports the sharded index (placement, chunking, merge, the replicas this node hosts), the
job client and dispatcher, and never the daemon: what it reads of the node is ``RagNode``.

Map of the package:

- ``Coordinator`` (coordinator.py): the one object the API and the daemon use: creates,
  updates and drops collections, and hands the rest to the parts below.
- ``RagNode`` (ports.py): the node's parts the rag layer reads (a Protocol the daemon's
  ``Node`` satisfies).
- ``SwarmView`` (swarm_view.py): live index peers, placement, who holds which shard.
- ``Ingest`` (ingest.py): validate, embed on the embedding peers, write, delete;
  ``ShardWriter`` (writes.py): quorum writes to a shard's owners; ``settle``
  (write_quorum.py): how a quorum write settles (pure).
- ``Search`` (search.py): shard searches with hedging, fetch, exact merge.
- ``ReplicaSync`` (sync.py): the sync loop: definitions, pulls, recovery, replica collection.
- ``shard_rows`` (shard_status.py): every shard's replicas across the swarm (``shard.info``).
- plan.py (pure): deadlines, shard plans, hedging, batches and their spread over the
  embedders, the exact merge of shard answers, replication notes.
- prompt.py (pure): the prompt of ``ask`` and chat with a collection, the no-sources reply.
- ``run_agent`` (agent.py): the agent's bounded tool loop (``ask --agent``); its pure step
  logic in agent_steps.py, its ports on the swarm (generate, search, fetch by doc id) in
  agent_swarm.py; the model's actions are parsed by ``protocol/agent_actions.py``.
- query_vector.py (pure): a query vector from a client, checked against the collection's
  pinned model and dimension.
"""
