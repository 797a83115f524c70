"""Give every Delta op its state, as graph inputs (past) and outputs (present), after the
model's own inputs and outputs, named as docs/state_protocol.md fixes:
  past  `deltaonnx.past.<node>.x_ref`, `deltaonnx.past.<node>.y`: float32, rank 4, every dim symbolic
        (so the empty [0,0,0,0] state of a first run is accepted);
  present `deltaonnx.present.<node>.x_ref` and the node's Y (which keeps the model's name when Y is one
        of the model's outputs);
  then the change maps `deltaonnx.map.<node>`, uint8 [N,1,Ho,Wo]."""
from __future__ import annotations

import onnx_ir as ir

from .conversion_context import ConversionContext
from .delta_ops import LAYOUT_BLOCKED, LAYOUT_BLOCKED_OUT, LAYOUT_NCHW, MAP_OUT, REORDER_INPUTS, X_REF_NEXT, Y, input_positions, is_delta_op, is_reorder, keeps_last_output
from .graph_edits import attribute
from .pad_lanes import PADDED_CHANNELS_META_KEY
from .delta_rewrite import past_name


def _past_input(node_name: str, kind: str) -> ir.Value:
    # Named symbolic dims, distinct per input: no shape relation is implied between state tensors.
    shape = ir.Shape([f"{node_name}.{kind}.{axis}" for axis in range(4)])
    return ir.Value(name=past_name(node_name, kind), shape=shape, type=ir.TensorType(ir.DataType.FLOAT))


def state_entry(node: str, past: ir.Value, present: ir.Value, kind: str, layout: str) -> dict:
    """One entry of the metadata's `state` (docs/state_protocol.md); a padded blocked tensor's carries its logical
    channel count `channels` (it holds roundup(channels, b) of them)."""
    entry = {"node": node, "past": past.name, "present": present.name, "kind": kind, "layout": layout}
    channels = present.meta.get(PADDED_CHANNELS_META_KEY)
    if channels is not None:
        entry["channels"] = int(channels)
    return entry


class AddStateInputsOutputs(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        delta_nodes = [node for node in graph if is_delta_op(node)]
        for node in delta_nodes:
            positions = input_positions(node.op_type)
            y, x_ref_next = node.outputs[Y], node.outputs[X_REF_NEXT]
            past_x_ref, past_y = _past_input(node.name, "x_ref"), _past_input(node.name, "y")
            graph.inputs.extend([past_x_ref, past_y])
            node.replace_input_with(positions["x_ref"], past_x_ref)
            node.replace_input_with(positions["y_prev"], past_y)
            graph.outputs.append(x_ref_next)
            if not y.is_graph_output():
                graph.outputs.append(y)
            # A blocked op's state is channel-blocked memory, valid only at the library's block (docs/design.md#state).
            # A "blocked_out" conv's X_ref is NCHW but listed as blocked too: under another block both entries start
            # empty together (an X_ref kept beside an emptied Y_prev would fail rule 1's check of Y_prev).
            layout = attribute(node, "layout", LAYOUT_NCHW)
            layout = LAYOUT_BLOCKED if layout == LAYOUT_BLOCKED_OUT else layout
            self.context.state.append(state_entry(node.name, past_x_ref, x_ref_next, "x_ref", layout))
            self.context.state.append(state_entry(node.name, past_y, y, "y", layout))
        for node in delta_nodes:
            change_map = node.outputs[MAP_OUT]
            graph.outputs.append(change_map)
            self.context.maps.append({"node": node.name, "output": change_map.name, "shape_of": node.outputs[Y].name})
        return ir.passes.PassResult(model, modified=bool(delta_nodes))


class AddReorderState(ir.passes.InPlacePass):
    """A DeltaReorder or DeltaResize whose input has a change map (wire_maps.py) keeps its last output as state, so it
    redoes only the outputs of marked pixels (docs/ops.md#deltareorder, #deltaresize): past
    `deltaonnx.past.<node>.y`, present its Y, listed after the Delta ops' state with the layout of Y. Without a map it
    computes every output and keeps nothing."""

    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        carriers = [node for node in graph if keeps_last_output(node) and len(node.inputs) > REORDER_INPUTS["map_in"]
                    and node.inputs[REORDER_INPUTS["map_in"]] is not None]
        map_outputs = {entry["output"] for entry in self.context.maps}
        for node in carriers:
            y, past_y = node.outputs[0], _past_input(node.name, "y")
            graph.inputs.append(past_y)
            node.replace_input_with(REORDER_INPUTS["y_prev"], past_y)
            if not y.is_graph_output():  # with the other state, before the change maps
                at = next((i for i, v in enumerate(graph.outputs) if v.name in map_outputs), len(graph.outputs))
                graph.outputs.insert(at, y)
            layout = attribute(node, "to") if is_reorder(node) else attribute(node, "layout", LAYOUT_NCHW)
            self.context.state.append(state_entry(node.name, past_y, y, "y", layout))
        return ir.passes.PassResult(model, modified=bool(carriers))
