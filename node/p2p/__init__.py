"""calinode.node.p2p: the libp2p side of a node: the host, its guards, framed streams, signed
capability records and what the node believes about its peers. Imports only
:mod:`calinode.protocol` and the node's own foundations (config, identity, rejections).

Map of the package:

- ``build_host``, ``guarded``, ``PeerGate`` (host.py): a Noise-only libp2p host and the guards
  that keep one bad stream or an unknown peer from reaching, or killing, the node.
- ``install`` (yamux_credit.py): yamux receive credit in 16 KiB steps, not one update a read.
- ``expand_wildcards`` (addresses.py): the addresses a node advertises.
- ``FramedStream`` (framed_stream.py): protocol messages over a stream, reads under deadlines.
- ``RecordSigner``, ``verify_record`` (records.py): signed capability records;
  ``RecordVerdicts`` (record_verdicts.py) remembers their signature checks.
- ``PeerTable`` (peer_table.py): pure freshness and liveness logic for capability records.
- ``RelayedCandidates``, ``DialBudget`` (candidates.py): peers only heard of, capped, dialled
  under a budget (membership's relayed records; pure).
- ``IdentityConflicts``, ``OwnIdWatch``, ``TwinProbes`` (identity_conflict.py): another node
  running with this node's identity (a copied home).
- ``run_mdns`` (mdns.py): optional LAN discovery; it reads the node through ``MdnsNode``.
- ``Membership`` (membership.py): bootstrap, peer exchange, heartbeats, dead-peer detection;
  the pure decisions of a round (membership_rules.py): targets, relayed news, twin probes,
  refusal reasons, addresses.
- ``HandshakeFailures``, ``watch_inbound_handshakes`` (reachability.py): failed inbound
  handshakes (a peer with another swarm key), and the connection facts doctor reads.
"""
