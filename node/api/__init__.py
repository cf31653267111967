"""calinode.node.api: the local HTTP API (Starlette under hypercorn, on trio). Routes turn a
request into a call of the coordinator (``node.coordinator``), the dispatcher or the peer
table; nothing here speaks to a peer itself.

Map of the package:

- ``ApiNode`` (node_view.py): what the routes use of the running node, a ``Protocol`` the
  daemon's ``Node`` satisfies (the API never imports the daemon above it).
- ``serve_api``, ``build_app`` (app.py): the app, its routes (status, peers, ping) and the
  hypercorn server the daemon starts.
- ``ApiGuard``, ``read_json`` (guard.py): bearer token, Host and Origin checks, body size caps.
- ``field``, ``integer``, ``string``, ``peer_ids``, ``request_deadline`` (bodies.py): the one
  reader of request bodies; one timeout cap (``MAX_TIMEOUT``, 600 s) for every route.
- ``error_response`` (errors.py): ``{"error": {code, message, type}}`` with one status table.
- ``FastJSONResponse`` (json_response.py): JSON bodies with numpy arrays serialized by orjson.
- ``AnswerEndpoint``, ``stream_answer`` (streaming.py): the one endpoint of the routes whose
  answer may stream (generate, chat, ask) and the one writer of streamed (SSE/NDJSON) answers.
- ``inference_routes`` (inference_routes.py): ``/v1/embed``, ``/v1/generate`` and the
  OpenAI-compatible routes.
- ``sampling_params`` (sampling_body.py): a chat body's ``response_format``, ``n``,
  ``logprobs``, ``top_logprobs`` as generate job params; ``chat_choices`` (chat_choices.py):
  every sample of a generate result as an OpenAI choice, with its logprobs.
- ``tool_params``, ``wire_messages`` (tools_body.py): a chat body's ``tools``,
  ``tool_choice`` and tool history as generate job params; ``tool_call_deltas``
  (tool_deltas.py): ``message.tool_calls`` and the streamed tool-call deltas.
- ``rag_routes`` (rag_routes.py): collections, ingest, search, ask and shards.
- ``model_files_routes`` (model_files_routes.py): a served model's files by sha256 (the
  browser's embedding); ``doctor_routes`` (doctor_routes.py): ``/v1/doctor``, ``/v1/bench``.
"""
