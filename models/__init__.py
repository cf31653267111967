"""calinode.models: model backends behind small blocking interfaces.

Empty until the model issue lands: ONNX embedder, GGUF generator, FAISS shard store and the
model registry will live here, each called from the daemon through ``trio.to_thread``.
"""
