"""calinode.node.rag: collections across the swarm: create, ingest, search, ask, replica sync.

Map of the package:

- ``Coordinator`` (coordinator.py): create, ingest, search, ask, replica sync across the
  swarm.
- ``DocSettlement``, ``settle`` (write_quorum.py): how a quorum write settles (pure).
"""
