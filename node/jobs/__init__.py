"""calinode.node.jobs: jobs on ``/calinode/job/1.0.0`` (one request and its answer per stream,
under a deadline) and where an ``embed`` or ``generate`` job runs. Imports
:mod:`calinode.node.p2p` (streams, hosts) below it, never the work above it (inference,
index, rag).

Map of the package:

- ``JobServer``, ``JobRegistry``, ``JobContext`` (server.py): the handler of job streams;
  job kinds register here.
- ``JobAdmission`` (admission.py): slots and request bytes per peer and in total (pure).
- ``JobClient`` (client.py): ``call`` sends a job to a peer, or to this node itself, with the
  remaining budget; ``call_parsed`` parses the reply into its typed view.
- ``register_builtin_jobs`` (builtin.py): ``ping`` and ``echo``.
- ``rank_candidates``, ``SentJobs`` (routing.py): where a job runs (pure rules; the load
  counts the jobs this node has in flight to each peer).
- ``WorkQueue``, ``RatedSpread`` (work_queue.py): a large embed cut into batches that every
  capable peer pulls when free (a fast peer serves more, a stalled batch is hedged); where
  an ingest's next batch goes (pure).
- ``Dispatcher``, ``default_model`` (dispatch.py): embed and generate on whichever node has
  the model, batches spread and retried within one deadline.
- ``JobActivity`` (activity.py): per-kind counters of the jobs this node ran (the dashboard).
"""
