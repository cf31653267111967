"""calinode.node.inference: the models this node runs itself, and the job kinds that run them.
Blocking model code (:mod:`calinode.models`) runs in worker threads, never on the event loop.

Map of the package:

- ``LocalModels``, ``EmbedService``, ``GenerateService`` (services.py): this node's embedders
  (requests that arrive together are merged into one batch) and generators, off the loop.
- ``run_streaming`` (thread_stream.py): carries tokens out of a worker thread, with
  cancellation both ways.
- ``register_inference_jobs`` (jobs.py): the ``embed``, ``embed_chunks`` and ``generate`` job
  kinds; ``texts_param``, ``generate_request``: the same checks for the HTTP API.
- ``ToolTurn`` (tool_turns.py): what tool calling changes in one ``generate`` job.
"""
