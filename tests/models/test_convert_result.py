"""What convert returns: inputs and outputs kept, state following them, the metadata, and the clear errors of
what it refuses."""
from __future__ import annotations


import onnx
import pytest
from onnx import TensorProto, helper

from builders import DOMAIN
import deltaonnx
from deltaonnx.convert import ConversionError, convert_with_report, inspect_model
from conversion import attr, conv_block_model, make_model, metadata_of, nodes_of, tensor_info, weights


# --------------------------------------------------------------------------------------------------
# structure of the result: inputs/outputs, state, metadata
# --------------------------------------------------------------------------------------------------


def test_model_inputs_outputs_kept_and_state_follows(zoo):
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.05, gate="pixel")  # the block gate: test_gate_convert.py
    n_in, n_out = len(original.graph.input), len(original.graph.output)
    assert [i.SerializeToString() for i in converted.graph.input[:n_in]] == [i.SerializeToString() for i in original.graph.input]
    for got, want in zip(converted.graph.output[:n_out], original.graph.output):
        assert got.name == want.name
        assert got.type.tensor_type.elem_type == want.type.tensor_type.elem_type
        assert [d.dim_value for d in got.type.tensor_type.shape.dim] == [d.dim_value for d in want.type.tensor_type.shape.dim]
    meta = metadata_of(converted)
    extra_inputs = [i.name for i in converted.graph.input[n_in:]]
    assert extra_inputs == [s["past"] for s in meta["state"]]
    for past in converted.graph.input[n_in:]:
        tensor_type = past.type.tensor_type
        assert tensor_type.elem_type == TensorProto.FLOAT
        assert len(tensor_type.shape.dim) == 4
        assert all(not d.HasField("dim_value") for d in tensor_type.shape.dim)  # fully symbolic
    output_names = [o.name for o in converted.graph.output]
    for entry in meta["state"]:
        assert entry["present"] in output_names
    assert output_names[-len(meta["maps"]):] == [m["output"] for m in meta["maps"]]
    assert converted.ir_version <= 10
    assert {o.domain: o.version for o in converted.opset_import}[DOMAIN] == 1
    onnx.checker.check_model(converted)


def test_result_ir_version_is_one_ort_loads(rng):
    model = conv_block_model(rng, [helper.make_node("Relu", ["y"], ["out"])])
    model.ir_version = onnx.IR_VERSION  # what onnx writes by default (> 10)
    assert deltaonnx.convert(model).ir_version == 10
    model.ir_version = 7
    assert deltaonnx.convert(model).ir_version == 7


def test_metadata_lists_state_maps_and_every_decision(zoo):
    original = zoo.mobilenetv3_like()
    converted, report = convert_with_report(original, threshold=0.05, inner_threshold=0.0, gate="pixel")
    meta = metadata_of(converted)
    assert meta["format"] == 1
    assert meta["deltaonnx_version"] == deltaonnx.__version__
    assert meta["threshold"] == pytest.approx(0.05) and meta["inner_threshold"] == 0.0
    delta_nodes = [n for n in converted.graph.node if n.domain == DOMAIN and n.op_type in ("DeltaConv", "DeltaPool")]
    # Nodes comparing exactly (threshold 0) behind a change map keep no X_ref (drop_references.py).
    dropped = {n.name for n in delta_nodes
               if helper.get_attribute_value(next(a for a in n.attribute if a.name == "threshold")) == 0.0
               and len(n.input) > (5 if n.op_type == "DeltaConv" else 3)
               and n.input[5 if n.op_type == "DeltaConv" else 3]}
    assert dropped and meta["dropped_references"] == [n.name for n in delta_nodes if n.name in dropped]
    assert len(dropped) < len(delta_nodes)  # the input gate (threshold 0.05) keeps its reference
    expected_order = [n.name for node in delta_nodes for n in ([node] if node.name in dropped else [node, node])]
    # then the reorders at the edges of blocked regions that read a change map (docs/ops.md#deltareorder)
    expected_order += [n.name for n in converted.graph.node if n.op_type == "DeltaReorder" and len(n.input) > 2]
    assert [e["node"] for e in meta["state"]] == expected_order

    def state_layout(layout):  # a blocked_out conv lists its (NCHW) X_ref as blocked, to start empty with its Y
        layout = layout.decode() if layout else "nchw"
        return "blocked" if layout == "blocked_out" else layout

    for node in delta_nodes:
        entries = {e["kind"]: e for e in meta["state"] if e["node"] == node.name}
        x_ref_at = 3 if node.op_type == "DeltaConv" else 1
        if node.name in dropped:
            assert "x_ref" not in entries and node.input[x_ref_at] == "" and node.output[1] == ""
        else:
            assert entries["x_ref"] == {"node": node.name, "past": f"deltaonnx.past.{node.name}.x_ref",
                                        "present": f"deltaonnx.present.{node.name}.x_ref", "kind": "x_ref",
                                        "layout": state_layout(attr(node, "layout"))}
            assert node.input[x_ref_at] == entries["x_ref"]["past"]
        assert entries["y"]["past"] == f"deltaonnx.past.{node.name}.y"
        assert entries["y"]["present"] == node.output[0]  # Y is the present of the y state
        assert node.input[x_ref_at + 1] == entries["y"]["past"]
    assert meta["maps"] == [{"node": n.name, "output": f"deltaonnx.map.{n.name}", "shape_of": n.output[0]} for n in delta_nodes]
    sources = {n.name for n in original.graph.node if n.op_type in ("Conv", "MaxPool")}
    assert {e["source"] for e in meta["nodes"]} == sources
    for entry in meta["nodes"]:
        assert entry["decision"] in ("converted", "dense", "ineligible", "fused")
        assert entry["reason"]
        assert isinstance(entry["flops"], int) and entry["flops"] > 0
        if entry["decision"] == "converted":
            assert entry["op"] in ("DeltaConv", "DeltaPool") and entry["name"].startswith(entry["op"] + "_")
            assert entry["threshold"] is not None
        else:
            assert entry["threshold"] is None and entry["name"] == entry["source"]
    # the squeeze-excite gates' convs (two the cost model kept dense): each gate is one DeltaChannelGate
    fused = [e for e in meta["nodes"] if e["decision"] == "fused"]
    gates = {n.name for n in converted.graph.node if n.op_type == "DeltaChannelGate"}
    assert len(fused) == 6 and len(gates) == 3 and not [e for e in meta["nodes"] if e["decision"] == "dense"]
    assert {e["reason"].split()[2] for e in fused} == gates
    # Report and metadata agree, and inspect of the converted model reads it back.
    back = inspect_model(converted)
    assert [(r.node, r.decision, r.flops) for r in back.rows] == [(r.node, r.decision, r.flops) for r in report.rows]
    assert back.done


def test_model_output_that_is_a_conv_output_keeps_its_name_as_present_y(rng):
    model = conv_block_model(rng, [], out="y")
    converted = deltaonnx.convert(model)
    meta = metadata_of(converted)
    y_state = [e for e in meta["state"] if e["kind"] == "y"][0]
    assert y_state["present"] == "y"
    assert [o.name for o in converted.graph.output].count("y") == 1
    assert converted.graph.output[0].name == "y"


def test_value_info_gives_ranks_of_delta_outputs(zoo):
    converted = deltaonnx.convert(zoo.cnn1())
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in converted.graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in converted.graph.output})
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert shapes[node.output[0]] == [1, 32, 64, 64]
    assert shapes[node.output[1]] == [1, 1, 64, 64]  # X_ref_next has X's shape
    assert shapes[node.output[2]] == [1, 1, 64, 64]  # the map: [N,1,Ho,Wo]
    map_type = [v for v in converted.graph.output if v.name == node.output[2]][0].type.tensor_type
    assert map_type.elem_type == TensorProto.UINT8


def test_input_model_is_never_modified(zoo, tmp_path):
    original = zoo.resnet18_like()
    before = original.SerializeToString()
    deltaonnx.convert(original)
    assert original.SerializeToString() == before
    path = tmp_path / "m.onnx"
    path.write_bytes(before)
    deltaonnx.convert(str(path))
    deltaonnx.convert(before)
    assert path.read_bytes() == before


def test_converting_a_converted_model_is_a_clear_error(zoo):
    converted = deltaonnx.convert(zoo.cnn1())
    with pytest.raises(ConversionError, match="already converted"):
        deltaonnx.convert(converted)


def test_models_without_convertible_nodes_are_a_clear_error(rng):
    relu_only = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x", [1, 3, 4, 4])], [tensor_info("y", None)])
    with pytest.raises(ConversionError, match="no convertible node: the model has no Conv or MaxPool"):
        deltaonnx.convert(relu_only)
    conv3d = make_model(
        [helper.make_node("Conv", ["x", "W"], ["y"], name="c3d")],
        [tensor_info("x", [1, 2, 4, 4, 4])], [tensor_info("y", None)], [weights(rng, "W", (2, 2, 1, 1, 1))],
    )
    with pytest.raises(ConversionError, match=r"no convertible node \(1x Conv: 3-D convolution"):
        deltaonnx.convert(conv3d)


def test_unsupported_inputs_are_clear_errors(rng):
    with pytest.raises(ConversionError, match="not an ONNX model"):
        deltaonnx.convert(b"definitely not a protobuf \xff\xfe")
    with pytest.raises(ConversionError, match="no such file"):
        deltaonnx.convert("/nonexistent/model.onnx")
    old = conv_block_model(rng, [helper.make_node("Relu", ["y"], ["out"])], opset=6)
    with pytest.raises(ConversionError, match="opset 6 is older than 7"):
        deltaonnx.convert(old)
