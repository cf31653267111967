"""Each BERT layer's self-attention replaced by ONNX Runtime's fused ``Attention`` operator.

ONNX Runtime's transformer optimizer fuses SkipLayerNorm and GELU on the MiniLM graph but not
its attention: the graph comes from torch's dynamo exporter, whose scaled-dot-product
attention (query and key each scaled by ``head_size ** -0.25``, a NaN guard after Softmax,
shape arithmetic around the key's transposes) is not a pattern the optimizer knows. Left
unfused, every layer runs about 25 small operators per call, which is most of the time of a
one-text call (the INT8 model runs one text per call, see ``ModelManifest.batch_invariant``).

:func:`fuse_attention` finds each layer by its weights' checkpoint names (the query, key and
value projections and the output projection of ``encoder.layer.N.attention``), packs the three
projections into the one weight and bias ``Attention`` takes, feeds it the attention mask as
int32, and drops the operators nothing reads any more. ``Attention`` computes
``softmax(q k^T / sqrt(head_size) + mask) v`` per head, exactly the replaced subgraph (masked
positions get -10000 instead of the float minimum: both vanish in the softmax). Dynamic
quantization then turns it into ``QAttention``. Pure logic on ``onnx`` protos.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from calinode.models.prepare.weights import Slot
from calinode.protocol.errors import ConfigError

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto

    _Message = TypeVar("_Message", NodeProto, TensorProto)

MASK_INT32 = "attention_mask_int32"
_PARTS = ("query", "key", "value")


def fuse_attention(model: ModelProto, slots: Sequence[Slot], *, layers: int,
                   num_heads: int, prefix: str = "") -> int:
    """Replace the self-attention of ``layers`` layers in ``model`` (in place); returns how
    many were fused. ``slots`` name the graph's weights (:func:`weights.weight_slots`);
    raises ``ConfigError`` when a layer's subgraph is not where its weights say."""
    from onnx import helper, numpy_helper

    by_checkpoint = {slot.checkpoint: slot for slot in slots}
    initializers = {item.name: item for item in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    model.graph.node.insert(0, helper.make_node(
        "Cast", ["attention_mask"], [MASK_INT32], to=6, name="attention_mask_to_int32"))
    fused = 0
    for layer in range(layers):
        base = f"encoder.layer.{layer}.attention"
        try:
            weights = [by_checkpoint[f"{base}.self.{part}.weight"] for part in _PARTS]
            out_weight = by_checkpoint[f"{base}.output.dense.weight"]
        except KeyError as missing:
            raise ConfigError(f"attention fusion: layer {layer} has no weight {missing}") from None
        matmuls = [_only_consumer(consumers, slot.initializer, "MatMul") for slot in weights]
        hidden = {node.input[0] for node in matmuls}
        out_matmul = _only_consumer(consumers, out_weight.initializer, "MatMul")
        if len(hidden) != 1 or not all(slot.transposed for slot in weights):
            raise ConfigError(f"attention fusion: layer {layer}'s projections do not share "
                              "one input")
        biases = [f"{prefix}{base}.self.{part}.bias" for part in _PARTS]
        if not all(name in initializers for name in biases):
            raise ConfigError(f"attention fusion: layer {layer} has no projection biases")
        packed_weight = np.concatenate(
            [numpy_helper.to_array(initializers[slot.initializer]) for slot in weights], axis=1)
        packed_bias = np.concatenate(
            [numpy_helper.to_array(initializers[name]) for name in biases])
        weight_name, bias_name = f"{prefix}{base}.qkv.weight", f"{prefix}{base}.qkv.bias"
        model.graph.initializer.extend([numpy_helper.from_array(packed_weight, weight_name),
                                        numpy_helper.from_array(packed_bias, bias_name)])
        context = out_matmul.input[0]
        old = producer[context]
        model.graph.node.remove(old)
        position = list(model.graph.node).index(out_matmul)
        model.graph.node.insert(position, helper.make_node(
            "Attention", [hidden.pop(), weight_name, bias_name, MASK_INT32], [context],
            name=f"Attention_{layer}", domain="com.microsoft", num_heads=num_heads))
        fused += 1
    drop_dead_nodes(model)
    if not any(entry.domain == "com.microsoft" for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def _only_consumer(consumers: dict[str, list[NodeProto]], name: str, op_type: str
                   ) -> NodeProto:
    found = consumers.get(name, [])
    if len(found) != 1 or found[0].op_type != op_type:
        raise ConfigError(f"attention fusion: {name} is not read by exactly one {op_type}")
    return found[0]


def drop_dead_nodes(model: ModelProto) -> None:
    """Remove the nodes and initializers no graph output depends on (in place); the order of
    the nodes that stay is kept (it is topological and stays so)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    needed: set[str] = set()
    todo = [output.name for output in model.graph.output]
    live: set[int] = set()
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None and id(node) not in live:
            live.add(id(node))
            todo.extend(x for x in node.input if x)
    keep_nodes = [_copy(node) for node in model.graph.node if id(node) in live]
    keep_inits = [_copy(item) for item in model.graph.initializer if item.name in needed]
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_inits)


def _copy(message: _Message) -> _Message:
    """A detached copy: a protobuf message taken out of a repeated field it is deleted from
    must not be relied on."""
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate
