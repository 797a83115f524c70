"""The converted model Triton's onnxruntime backend runs: state is emptied on a sequence's START request.

Triton carries the past/present state itself (implicit state), but it cannot hand the first request of a
sequence an empty tensor: it hands a state whose variable dimensions became 1, filled with zeros or left
uninitialized. Rule 1 of the ops makes most such states harmless (a [1,1,1,1] reference does not fit a
[1,C,H,W] input: everything is recomputed), but not all of them: where a map is 1x1 with one channel (the
deepest maps of a net run on a small crop), the state fits, and zeros are then a valid-looking reference
against which an all-zero frame "did not change": the op would return Triton's zeros instead of its output.

So no shape test can tell Triton's first state from a real one; the START flag can. This rewrite adds an
int32 input `START` (Triton's CONTROL_SEQUENCE_START, shape [1]) and feeds every state input through
`Slice(past, axis 0, ends = (1 - START) * BIG)`: on START the ops see a [0, ...] state, which is empty
(rule 1) whatever Triton handed in; otherwise the state passes unchanged.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

START_INPUT = "START"
_PREFIX = "deltaonnx.triton."
_BIG = 1 << 62  # Slice clamps `ends` to the dimension: this keeps the whole batch axis


def _subgraph_reads(graph: onnx.GraphProto, names: set[str]) -> set[str]:
    """Names in `names` read inside any subgraph of `graph` (If/Loop/Scan bodies)."""
    found: set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            bodies = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
            for body in bodies:
                found |= {name for inner in body.node for name in inner.input if name in names}
                found |= _subgraph_reads(body, names)
    return found


def gate_state_on_start(model: onnx.ModelProto, past_names: list[str]) -> onnx.ModelProto:
    """A copy of the converted `model` whose state inputs `past_names` are emptied when input START is 1."""
    gated = onnx.ModelProto()
    gated.CopyFrom(model)
    graph = gated.graph
    existing = {i.name for i in graph.input} | {o.name for o in graph.output}
    existing |= {name for node in graph.node for name in node.output}
    if START_INPUT in existing:
        raise ValueError(f"the model already has a tensor named {START_INPUT!r}, the name Triton's START "
                         "control input needs")
    missing = [name for name in past_names if name not in {i.name for i in graph.input}]
    if missing:
        raise ValueError(f"state inputs {missing} listed in the metadata are not inputs of the graph")
    opset = next((o.version for o in gated.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 10:
        raise ValueError(f"the model imports ONNX opset {opset}: gating its state on START needs Slice of opset 10+")
    nested = _subgraph_reads(graph, set(past_names))
    if nested:
        raise ValueError(f"state inputs {sorted(nested)} are read inside a subgraph: cannot gate them on START")

    graph.input.append(helper.make_tensor_value_info(START_INPUT, TensorProto.INT32, [1]))
    keep, ends = _PREFIX + "keep", _PREFIX + "slice_end"
    prologue = [
        helper.make_node("Sub", [_PREFIX + "one", START_INPUT], [keep + ".i32"], name=_PREFIX + "not_start"),
        helper.make_node("Cast", [keep + ".i32"], [keep], to=TensorProto.INT64, name=_PREFIX + "keep_i64"),
        helper.make_node("Mul", [keep, _PREFIX + "big"], [ends], name=_PREFIX + "slice_end"),
    ]
    graph.initializer.extend([
        helper.make_tensor(_PREFIX + "one", TensorProto.INT32, [1], [1]),
        helper.make_tensor(_PREFIX + "big", TensorProto.INT64, [1], [_BIG]),
        helper.make_tensor(_PREFIX + "zero", TensorProto.INT64, [1], [0]),
    ])
    renamed = {}
    for index, past in enumerate(past_names):
        renamed[past] = f"{_PREFIX}gated.{past}"
        prologue.append(helper.make_node("Slice", [past, _PREFIX + "zero", ends, _PREFIX + "zero"],
                                         [renamed[past]], name=f"{_PREFIX}gate_{index}"))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return gated


def without_change_maps(model: onnx.ModelProto, change_maps: list[str]) -> onnx.ModelProto:
    """`model` with the block gates' change-map inputs (docs/state_protocol.md) turned into constant empty maps
    ([0,1,0,0] uint8: no map, the gate looks at the whole frame), so Triton need not feed them."""
    if not change_maps:
        return model
    served = onnx.ModelProto()
    served.CopyFrom(model)
    graph = served.graph
    kept = [i for i in graph.input if i.name not in change_maps]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(helper.make_tensor(name, TensorProto.UINT8, [0, 1, 0, 0], []) for name in change_maps)
    return served
