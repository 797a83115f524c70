"""Replace each Conv/MaxPool planned for conversion by a DeltaConv/DeltaPool (docs/ops.md).

The Delta op takes the original's data input, weights and attributes; its state inputs are left empty
here (the state pass adds them) and its outputs are named for the state protocol right away:
Y `deltaonnx.present.<node>.y` (or the model's own output name when Y is a model output),
X_ref_next `deltaonnx.present.<node>.x_ref`, the change map `deltaonnx.map.<node>`."""
from __future__ import annotations

import onnx_ir as ir

from .protocol import DOMAIN

from .constants import constant_array
from .conversion_context import CONVERTED, PLAN_META_KEY, ConversionContext, NodePlan
from .delta_ops import CONV_INPUTS, DELTA_CONV, DELTA_POOL, MAP_OUT, POOL_INPUTS, X_REF_NEXT, Y
from .graph_edits import NameScope, attribute, copy_type_and_shape, substitute
from .shapes import map_shape_of


def past_name(node_name: str, kind: str) -> str:
    return f"deltaonnx.past.{node_name}.{kind}"


def present_name(node_name: str, kind: str) -> str:
    return f"deltaonnx.present.{node_name}.{kind}"


def map_name(node_name: str) -> str:
    return f"deltaonnx.map.{node_name}"


class ReplaceWithDeltaOps(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        scope = NameScope(graph)
        counters = {DELTA_CONV: 0, DELTA_POOL: 0}
        modified = False
        for node in list(graph):
            plan: NodePlan | None = node.meta.get(PLAN_META_KEY)
            if plan is None or plan.decision != CONVERTED:
                continue
            op_type = DELTA_CONV if node.op_type == "Conv" else DELTA_POOL
            name = _next_free_name(scope, op_type, counters)
            delta = _delta_node(node, op_type, name, plan, self.context.options.dense_fraction)
            delta.outputs[X_REF_NEXT].name = scope.take(present_name(name, "x_ref"))
            delta.outputs[MAP_OUT].name = scope.take(map_name(name))
            delta.outputs[Y].name = scope.take(present_name(name, "y"))
            graph.insert_before(node, delta)
            _type_outputs(node, delta)
            substitute(node.outputs[0], delta.outputs[Y])
            graph.remove(node, safe=True)
            delta.meta[PLAN_META_KEY] = plan
            plan.delta_name, plan.delta_op = name, op_type
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _next_free_name(scope: NameScope, op_type: str, counters: dict[str, int]) -> str:
    while True:
        candidate = f"{op_type}_{counters[op_type]}"
        counters[op_type] += 1
        if not any(
            scope.is_used(n)
            for n in (candidate, present_name(candidate, "y"), present_name(candidate, "x_ref"), map_name(candidate))
        ):
            scope.reserve(candidate)
            return candidate


def _spatial_attributes(node: ir.Node, kernel: list[int]) -> dict[str, object]:
    spatial_rank = len(kernel)
    attributes: dict[str, object] = {
        "kernel_shape": list(kernel),
        "strides": list(attribute(node, "strides", [1] * spatial_rank)),
        "pads": list(attribute(node, "pads", [0] * (2 * spatial_rank))),
        "dilations": list(attribute(node, "dilations", [1] * spatial_rank)),
    }
    auto_pad = attribute(node, "auto_pad", "NOTSET")
    if auto_pad != "NOTSET":
        attributes["auto_pad"] = auto_pad
        del attributes["pads"]  # ONNX forbids pads together with auto_pad
    return attributes


def _delta_node(node: ir.Node, op_type: str, name: str, plan: NodePlan, dense_fraction: float) -> ir.Node:
    x = node.inputs[0]
    if op_type == DELTA_CONV:
        weight = constant_array(node.inputs[1])
        attributes = _spatial_attributes(node, list(weight.shape[2:]))
        attributes["group"] = int(attribute(node, "group", 1))
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        inputs: list[ir.Value | None] = [None] * (CONV_INPUTS["y_prev"] + 1)
        inputs[CONV_INPUTS["x"]], inputs[CONV_INPUTS["w"]], inputs[CONV_INPUTS["b"]] = x, node.inputs[1], bias
    else:
        attributes = _spatial_attributes(node, list(attribute(node, "kernel_shape")))
        attributes["ceil_mode"] = int(attribute(node, "ceil_mode", 0))
        inputs = [None] * (POOL_INPUTS["y_prev"] + 1)
        inputs[POOL_INPUTS["x"]] = x
    attributes["threshold"] = float(plan.threshold or 0.0)
    attributes["dense_fraction"] = float(dense_fraction)
    if plan.inner_gate is not None:  # rule 2b in the op (absent attributes: the pixel rule)
        attributes["gate"] = "block"
        attributes["gate_block"] = int(plan.inner_gate["gate_block"])
        if plan.inner_gate["gate_hard"] is not None:
            attributes["gate_hard"] = float(plan.inner_gate["gate_hard"])
    return ir.node(op_type, inputs, attributes, domain=DOMAIN, num_outputs=3, name=name)


def _type_outputs(original: ir.Node, delta: ir.Node) -> None:
    """Types and shapes of the new outputs, so ORT (and readers) know ranks without the op's schema."""
    copy_type_and_shape(original.outputs[0], delta.outputs[Y])
    if delta.outputs[Y].type is None:
        delta.outputs[Y].type = ir.TensorType(ir.DataType.FLOAT)
    x = original.inputs[0]
    copy_type_and_shape(x, delta.outputs[X_REF_NEXT])
    if delta.outputs[X_REF_NEXT].type is None:
        delta.outputs[X_REF_NEXT].type = ir.TensorType(ir.DataType.FLOAT)
    delta.outputs[MAP_OUT].type = ir.TensorType(ir.DataType.UINT8)
    delta.outputs[MAP_OUT].shape = map_shape_of(delta.outputs[Y])
