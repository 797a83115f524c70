"""Put one DeltaGate (docs/ops.md) in front of the Delta ops that read a model input, when the block gate is
asked for (`gate="block"`).

The gate decides once what changed in the frame (docs/design.md#rule-2b) and outputs the gated frame (also its
next reference) and its change map. Every Delta op that read the frame then reads the gated frame with the
gate's map and threshold 0: it compares nothing, and DropExactReferences takes its X_ref away (the gate's
reference is the one copy of the frame in the state). State: `deltaonnx.past.<gate>.x_ref` in,
`deltaonnx.present.<gate>.x_ref` out (the gated frame itself). The gate's change-map input is a graph input
`deltaonnx.change_map.<gate>` (uint8, [N,1,H,W] or one cell per block), fed like state: an empty map
[0,1,0,0] is no map. DeltaSession feeds it (run(..., change_map=...))."""
from __future__ import annotations

from collections import defaultdict

import onnx_ir as ir

from .protocol import DOMAIN

from .conversion_context import PLAN_META_KEY, ConversionContext
from .delta_ops import DELTA_GATE, GATE_INPUTS, GATE_MAP_OUT, GATE_X_GATED, input_positions, is_delta_op
from .delta_rewrite import map_name, past_name, present_name
from .graph_edits import NameScope, copy_type_and_shape
from .shapes import map_shape_of
from .plan import reads_model_input

CHANGE_MAP_PREFIX = "deltaonnx.change_map."


def change_map_name(gate_name: str) -> str:
    return f"{CHANGE_MAP_PREFIX}{gate_name}"


def _threshold(node: ir.Node) -> float:
    attr = node.attributes.get("threshold")
    return float(attr.value) if attr is not None else 0.0


def _model_input_of(frame: ir.Value) -> tuple[str, list[int] | None]:
    """The model input the gate's 4-D frame is (through the layout-only ops reads_model_input accepts), and the
    transpose from that input's axes to the frame's (frame axis d is input axis perm[d]; None: the same)."""
    perm, value = [0, 1, 2, 3], frame
    while not value.is_graph_input():
        producer = value.producer()
        if producer.op_type == "Transpose":
            step = producer.attributes.get("perm")
            step = list(step.value) if step is not None else [3, 2, 1, 0]  # no perm: the axes reversed
            perm = [step[axis] for axis in perm]
        value = producer.inputs[0]
    return value.name, (perm if perm != [0, 1, 2, 3] else None)


class InsertInputGate(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        options = self.context.options
        if options.gate != "block":
            return ir.passes.PassResult(model, modified=False)
        graph = model.graph
        scope = NameScope(graph)
        readers: dict[ir.Value, list[ir.Node]] = defaultdict(list)
        for node in graph:
            if is_delta_op(node) and reads_model_input(node) and _threshold(node) > 0:
                readers[node.inputs[0]].append(node)
        modified = False
        for index, (frame, nodes) in enumerate(readers.items()):
            thresholds = {_threshold(node) for node in nodes}
            if len(thresholds) != 1:  # per-node overrides that disagree: each op keeps its own gate
                continue
            name = scope.take(f"{DELTA_GATE}_{index}")
            gate = self._gate_node(graph, scope, name, frame, thresholds.pop())
            graph.insert_before(nodes[0], gate)
            gated, change_map = gate.outputs[GATE_X_GATED], gate.outputs[GATE_MAP_OUT]
            for node in nodes:
                positions = input_positions(node.op_type)
                if len(node.inputs) <= positions["map_in"]:
                    node.resize_inputs(positions["map_in"] + 1)
                node.replace_input_with(positions["x"], gated)
                node.replace_input_with(positions["map_in"], change_map)
                node.attributes["threshold"] = ir.AttrFloat32("threshold", 0.0)
                plan = node.meta.get(PLAN_META_KEY)
                if plan is not None:
                    plan.has_map_input = True
                    plan.gate = name
            graph.outputs.extend([gated, change_map])
            self.context.state.insert(0, {"node": name, "past": gate.inputs[GATE_INPUTS["x_ref"]].name,
                                          "present": gated.name, "kind": "x_ref"})
            self.context.maps.insert(0, {"node": name, "output": change_map.name, "shape_of": gated.name})
            model_input, perm = _model_input_of(frame)
            self.context.gates.append({"node": name, "input": model_input, "perm": perm, "reads": frame.name, "rule": "block",
                                       "threshold": float(_threshold(gate)), "gate_block": options.gate_block,
                                       "gate_hard": float(gate.attributes["gate_hard"].value),
                                       "change_map": gate.inputs[GATE_INPUTS["map_in"]].name,
                                       "readers": [node.name for node in nodes]})
            modified = True
        return ir.passes.PassResult(model, modified=modified)

    def _gate_node(self, graph: ir.Graph, scope: NameScope, name: str, frame: ir.Value, tau: float) -> ir.Node:
        options = self.context.options
        hard = options.gate_hard_for(tau)
        past = ir.Value(name=scope.take(past_name(name, "x_ref")), type=ir.TensorType(ir.DataType.FLOAT),
                        shape=ir.Shape([f"{name}.x_ref.{axis}" for axis in range(4)]))
        graph.inputs.append(past)
        # Fed like state: an empty map [0,1,0,0] is no map (an overridable initializer would spare that, but
        # ORT neither binds nor optimises around those without complaint).
        external = ir.Value(name=scope.take(change_map_name(name)), type=ir.TensorType(ir.DataType.UINT8),
                            shape=ir.Shape([f"{name}.map.{axis}" for axis in range(4)]))
        graph.inputs.append(external)
        attributes = {"rule": "block", "threshold": float(tau), "gate_block": int(options.gate_block),
                      "gate_hard": float(hard)}
        gate = ir.node(DELTA_GATE, [frame, past, external], attributes, domain=DOMAIN, num_outputs=2, name=name)
        gated, change_map = gate.outputs[GATE_X_GATED], gate.outputs[GATE_MAP_OUT]
        gated.name = scope.take(present_name(name, "x_ref"))
        change_map.name = scope.take(map_name(name))
        copy_type_and_shape(frame, gated)
        if gated.type is None:
            gated.type = ir.TensorType(ir.DataType.FLOAT)
        change_map.type = ir.TensorType(ir.DataType.UINT8)
        change_map.shape = map_shape_of(gated)
        return gate
