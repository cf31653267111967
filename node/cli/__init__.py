"""calinode.node.cli: the ``calinode`` command. It reaches a running node only through its
local HTTP API (:class:`~calinode.node.client.CalinodeClient`); ``start`` runs the daemon in
this process, and ``models`` works on a home's files with no daemon.

Map of the package:

- ``main`` (main.py): the parser tree and the commands ``start``, ``keygen``, ``id``,
  ``token``, ``invite``, ``status``, ``peers``, ``ping``; the console script's entry point.
- ``CalinodeParser``, ``add_common_options`` (options.py): every command reads its options
  the same way (one-line usage errors, ``--home``/``--api``/``--json`` in one place).
- ``report`` (errors.py): the one error path: one line ``CODE: message; what to do``, an exit
  status per code.
- ``cmd_models`` (models.py): ``calinode models list|prepare|add|remove|verify|export``.
- ``running_node``, ``removal_breaks``, ``serve_hint`` (model_use.py): who uses an installed
  model (pinning collections, the running node), for ``models remove``/``prepare``/``add``.
- ``cmd_rag`` (rag.py): ``calinode collections|ingest|search|ask|shards`` over the API.
- ``print_table``, ``IngestProgress`` (render.py): tables (``peers``, ``shards``, ``models
  list``) and the ingest progress bar from ``rich`` at a terminal, plain lines otherwise.
- ``configure_logging`` (log_setup.py): calinode's own log lines, library chatter quiet.
- ``python -m calinode.node.cli`` (__main__.py): the command without its console script.
- ``cmd_dashboard`` (dashboard.py), ``cmd_doctor`` (doctor.py), ``cmd_bench`` (bench.py): the
  dashboard's login URL, the node's diagnosis, its measured speed.
"""
