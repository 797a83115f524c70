"""Drop the X_ref state of Delta ops that compare exactly (threshold 0) and receive a change map.

docs/design.md allows it ("Dropped references"): with tau = 0 the reference always equals X where it matters, and the map already says
which pixels changed, so the op can skip its comparison, keep no reference (half the state memory) and
read no X_ref: the node's X_ref input becomes absent (docs/ops.md), and its past/present x_ref state
leaves the graph and the metadata. Exactness is unchanged: recomputed pixels are computed from X, and a
pixel the map leaves unmarked did not change.

`keep_references` (thresholds to be raised later, as calibrate does) keeps every reference except those of the
ops reading a DeltaGate: the gate decides for them (docs/design.md#rule-2b), their threshold stays 0 whatever
the gate's, and a kept reference would only make them compare again what the gate already decided."""
from __future__ import annotations

import onnx_ir as ir

from .conversion_context import ConversionContext
from .delta_ops import DELTA_GATE, X_REF_NEXT, input_positions, is_delta_op
from .protocol import DOMAIN


def _threshold(node: ir.Node) -> float:
    attr = node.attributes.get("threshold")
    return float(attr.value) if attr is not None else 0.0


def _reads_gate(change_map: ir.Value) -> bool:
    producer = change_map.producer()
    return producer is not None and producer.domain == DOMAIN and producer.op_type == DELTA_GATE


class DropExactReferences(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        dropped = set()
        keep = self.context.options.keep_references
        for node in graph:
            if not is_delta_op(node) or _threshold(node) != 0.0:
                continue
            positions = input_positions(node.op_type)
            if len(node.inputs) <= positions["map_in"] or node.inputs[positions["map_in"]] is None:
                continue
            if keep and not _reads_gate(node.inputs[positions["map_in"]]):
                continue
            past = node.inputs[positions["x_ref"]]
            node.replace_input_with(positions["x_ref"], None)
            if past is not None and past.is_graph_input() and not past.uses():
                graph.inputs.remove(past)
            present = node.outputs[X_REF_NEXT]
            if present.is_graph_output():
                graph.outputs.remove(present)
            present.name = ""  # an absent optional output (ORT then plans no buffer for it)
            present.shape = None
            dropped.add(node.name)
        self.context.state[:] = [
            s for s in self.context.state if not (s["kind"] == "x_ref" and s["node"] in dropped)
        ]
        self.context.dropped_references = [node.name for node in graph if node.name in dropped]
        return ir.passes.PassResult(model, modified=bool(dropped))
