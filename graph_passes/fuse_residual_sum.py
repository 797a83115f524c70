"""Fuse a residual Add (and the activation after it) into the DeltaConv it reads: its sum input Z.

    DeltaConv (no activation; Y read only by the Add) -> Add(Y, Z) [-> an activation the conv can fuse]
becomes one DeltaConv computing act(conv(X) + B + Z) (docs/design.md#deltaconv), the way dense ORT fuses a residual
Add and its Relu into its NCHWc Conv (the Conv's Sum input): one pass over the output instead of the Add's and the
activation's, and no DeltaMapUnion for the Add (the fused op's map_out is the union: rule 4's marks and map_z's).

Only when Z will carry a change map (a producer Delta op's map through locality-keeping ops: locality.py, run
here with opaque tokens as the planner does; wire_maps.py then connects map_z), Z's shape provably equals Y's
(every dim), and the conv has group 1 (the op refuses Z otherwise). The fused op takes the Add's place in the
graph, after Z's producer. Runs after the activation fusion (a conv with an activation of its own keeps its Add)
and before the blocked layout, which puts Z in Y's memory order, and the state and map passes."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .conversion_context import PLAN_META_KEY
from .delta_ops import CONV_INPUTS, DELTA_CONV, Y, is_delta_op, sum_input
from .fuse_activation import match_activation
from .graph_edits import attribute, remove_unused_constants, sole_consumer, substitute
from .locality import ChangeMapPropagation, DryRunMaps
from .normalize import onnx_opset
from .shapes import dims, dims_provably_equal


class FuseResidualSumIntoDeltaConv(ir.passes.InPlacePass):
    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if not self.enabled:
            return ir.passes.PassResult(model, modified=False)
        graph = model.graph
        opset = onnx_opset(model)
        modified = False
        for conv in [node for node in graph if is_delta_op(node) and node.op_type == DELTA_CONV]:
            # the maps as they stand now: a fusion changes which values carry one (the Add's output goes)
            maps = ChangeMapPropagation(graph, opset, DryRunMaps()).run(
                {node.outputs[Y]: object() for node in graph if is_delta_op(node)})
            found = _residual_add(conv, maps)
            if found is None:
                continue
            add, z = found
            _fuse(graph, conv, add, z, opset)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _residual_add(conv: ir.Node, maps: dict) -> Optional[tuple[ir.Node, ir.Value]]:
    """(the Add, Z) when `conv` can take the Add's other operand as its sum, else None."""
    if attribute(conv, "activation", "") or (attribute(conv, "group", 1) or 1) != 1:
        return None
    if sum_input(conv) is not None:
        return None
    y = conv.outputs[Y]
    add = sole_consumer(y)
    if add is None or add.domain not in ("", "ai.onnx") or add.op_type != "Add" or len(add.inputs) != 2:
        return None
    z = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
    if z is None or z is y or z not in maps:
        return None
    y_dims, z_dims, sum_dims = dims(y), dims(z), dims(add.outputs[0])
    if y_dims is None or z_dims is None or sum_dims is None or not len(y_dims) == len(z_dims) == len(sum_dims) == 4:
        return None
    if not all(map(dims_provably_equal, y_dims, z_dims)) or not all(map(dims_provably_equal, y_dims, sum_dims)):
        return None
    return add, z


def _fuse(graph: ir.Graph, conv: ir.Node, add: ir.Node, z: ir.Value, opset: int) -> None:
    y = conv.outputs[Y]
    channels = dims(y)[1]
    match = match_activation(add.outputs[0], opset, channels if isinstance(channels, int) else -1)
    if match is not None and (match.name == "Softmax" or match.replacement is not None):
        match = None  # the op takes the sum before per-element activations only
    # The conv moves to the Add's place: Z's producer may come after it in the graph.
    graph.remove(conv)
    graph.insert_before(add, conv)
    if len(conv.inputs) <= CONV_INPUTS["map_z"]:
        conv.resize_inputs(CONV_INPUTS["map_z"] + 1)
    conv.replace_input_with(CONV_INPUTS["z"], z)
    removed = [add] + (match.nodes if match is not None else [])
    if match is not None:
        conv.attributes["activation"] = ir.AttrString("activation", match.name)
        if match.params:
            conv.attributes["activation_params"] = ir.AttrFloat32s("activation_params", match.params)
    parameters = [v for n in removed for v in n.inputs if v is not None and v is not y and v is not z]
    substitute(match.output if match is not None else add.outputs[0], y)
    graph.remove(removed, safe=True)
    remove_unused_constants(graph, parameters)
    plan = conv.meta.get(PLAN_META_KEY)
    if plan is not None:
        plan.fused.extend(n.name or n.op_type for n in removed)
        if match is not None:
            plan.activation = match.name
