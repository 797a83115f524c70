"""A squeeze-excite block's gate as one DeltaChannelGate (docs/ops.md#deltachannelgate): the region's pool
(DeltaGlobalAveragePool), the two 1x1 convs on its one pixel per channel and their activations become one node
computing S = act2(W2 act1(W1 mean(X) + B1) + B2), with S's per-item change map ([N,1,1,1]: any marked pixel of X's
map).

Why: on one pixel a conv is all fixed cost. mobilenetv3_like's three gates took 25-30 us each (the pool, two
DeltaConvs or a DeltaConv and ORT's Conv with its two NCHWc reorders), the arithmetic under 1 us of it
(docs/results.md#twenty-first-session). The gate keeps no state: whenever any pixel of X changed it recomputes
everything anyway (the mean reads every pixel), and a DeltaConv on one pixel either redoes it or carries it.

What is fused (after ChooseBlockedLayout, before the state pass; the convs' activations are already fused):
  - a DeltaGlobalAveragePool whose output has one reader;
  - that reader and the next: each a 1x1 conv of group 1, no pads, strides or dilations, constant weights
    [outputs, inputs, 1, 1] and constant or no bias: a DeltaConv exact (threshold 0, no sum input, NCHW layout), or
    ONNX's Conv (one the cost model kept dense) with the activation after it, when fuse_activation.py knows it;
  - the second conv's output read only as the gate S of DeltaChannelScale nodes.
A conv given a threshold (calibrate's per-node thresholds, --inner-threshold) is not fused: its comparison would
be lost."""
from __future__ import annotations

import dataclasses
from typing import Optional

import onnx_ir as ir

from .constants import constant_array
from .conversion_context import FUSED, PLAN_META_KEY
from .delta_ops import (CONV_INPUTS, DELTA_CHANNEL_GATE, DELTA_CONV, DELTA_GLOBAL_POOL, LAYOUT_NCHW, Y,
                        is_channel_scale, sum_input)
from .fuse_activation import match_activation
from .graph_edits import NameScope, attribute, numbered_name, sole_consumer, substitute
from .normalize import onnx_opset
from .protocol import DOMAIN
from .shapes import static_dims

SCALE_S = 1  # DeltaChannelScale's gate input


@dataclasses.dataclass
class GateConv:
    """One of the gate's two convs as the fused node reads it."""
    weights: ir.Value
    bias: Optional[ir.Value]
    activation: str
    params: list[float]
    nodes: list[ir.Node]  # the nodes it replaces (the conv, and ORT Conv's activation node)
    output: ir.Value  # after the activation


class FuseChannelGate(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = onnx_opset(model)
        scope = NameScope(graph)
        modified = False
        for pool in [n for n in graph if n.domain == DOMAIN and n.op_type == DELTA_GLOBAL_POOL]:
            channels = attribute(pool, "channels")
            reduce = _gate_conv(sole_consumer(pool.outputs[0]), pool.outputs[0], channels, opset)
            expand = reduce and _gate_conv(sole_consumer(reduce.output), reduce.output,
                                           int(constant_array(reduce.weights).shape[0]), opset)
            if expand is None or not _read_as_gates_only(expand.output):
                continue
            _replace(graph, scope, pool, reduce, expand)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _gate_conv(node: Optional[ir.Node], x: ir.Value, channels: Optional[int], opset: int) -> Optional[GateConv]:
    """`node` as one conv of the gate reading `x` (of `channels` channels), or None when it is not one."""
    if node is None or channels is None or not node.inputs or node.inputs[0] is not x:
        return None
    delta = node.domain == DOMAIN and node.op_type == DELTA_CONV
    if not delta and not (node.domain in ("", "ai.onnx") and node.op_type == "Conv"):
        return None
    weights = node.inputs[1] if len(node.inputs) > 1 else None
    w = constant_array(weights)
    if w is None or w.ndim != 4 or w.shape[1] != channels or tuple(w.shape[2:]) != (1, 1):
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and constant_array(bias) is None:
        return None
    if (attribute(node, "group", 1) or 1) != 1 or attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    for name in ("strides", "dilations"):
        if any(v != 1 for v in (attribute(node, name) or [])):
            return None
    if any(v != 0 for v in (attribute(node, "pads") or [])):
        return None
    if delta:
        if (attribute(node, "threshold", 0.0) != 0.0 or sum_input(node) is not None
                or attribute(node, "layout", LAYOUT_NCHW) != LAYOUT_NCHW or attribute(node, "activation", "") == "Softmax"):
            return None
        return GateConv(weights, bias, attribute(node, "activation", "") or "", list(attribute(node, "activation_params", []) or []),
                        [node], node.outputs[Y])
    match = match_activation(node.outputs[0], opset, int(w.shape[0]))
    if match is None:
        return GateConv(weights, bias, "", [], [node], node.outputs[0])
    if match.replacement is not None or match.name == "Softmax":
        return None
    return GateConv(weights, bias, match.name, list(match.params), [node, *match.nodes], match.output)


def _read_as_gates_only(s: ir.Value) -> bool:
    """S of a 1-pixel shape read only as DeltaChannelScale's gate."""
    found = static_dims(s)
    uses = list(s.uses())
    return (found is not None and len(found) == 4 and found[2:] == [1, 1] and not s.is_graph_output() and bool(uses)
            and all(is_channel_scale(use.node) and use.idx == SCALE_S for use in uses))


def _replace(graph: ir.Graph, scope: NameScope, pool: ir.Node, reduce: GateConv, expand: GateConv) -> None:
    name = numbered_name(scope, DELTA_CHANNEL_GATE)
    s = ir.Value(name=scope.take(f"deltaonnx.gate.{expand.output.name}"), type=expand.output.type,
                 shape=ir.Shape(expand.output.shape.dims) if expand.output.shape is not None else None)
    batch = expand.output.shape[0] if expand.output.shape is not None else None
    change_map = ir.Value(name=scope.take(f"deltaonnx.map_of.{s.name}"), type=ir.TensorType(ir.DataType.UINT8),
                          shape=ir.Shape([batch, 1, 1, 1]))
    attributes = {"layout": ir.AttrString("layout", attribute(pool, "layout", LAYOUT_NCHW)),
                  "channels": ir.AttrInt64("channels", int(attribute(pool, "channels"))),
                  "activation": ir.AttrString("activation", reduce.activation),
                  "gate_activation": ir.AttrString("gate_activation", expand.activation)}
    if reduce.params:
        attributes["activation_params"] = ir.AttrFloat32s("activation_params", reduce.params)
    if expand.params:
        attributes["gate_activation_params"] = ir.AttrFloat32s("gate_activation_params", expand.params)
    gate = ir.Node(DOMAIN, DELTA_CHANNEL_GATE,
                   [pool.inputs[0], reduce.weights, reduce.bias, expand.weights, expand.bias], attributes,
                   outputs=[s, change_map], name=name)
    graph.insert_before(pool, gate)
    substitute(expand.output, s)
    removed = [*expand.nodes[::-1], *reduce.nodes[::-1], pool]
    for node in removed:  # the convs' rows in the report and the metadata: part of the gate, no node of their own
        plan = node.meta.get(PLAN_META_KEY)
        if plan is not None:
            plan.decision, plan.delta_name, plan.delta_op, plan.threshold = FUSED, None, None, None
            plan.reason = f"fused into {name} (a squeeze-excite gate: its pool and both convs)"
    graph.remove(removed, safe=True)
