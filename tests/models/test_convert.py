"""The converter (deltaonnx.convert / graph_passes): structure of the result, each pass's rewrite, and the
key property: at threshold 0 the converted model, run in ORT with the op library and its state fed from
run to run, equals dense ORT on the original model on every frame of a sequence."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import DOMAIN
import deltaonnx
from deltaonnx.convert import ConversionError, convert_with_report, inspect_model
from deltaonnx.graph_passes.fold_batchnorm import FoldBatchNormIntoConv
from deltaonnx.graph_passes.normalize import InferShapes

REL_TOL = 1e-4

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def metadata_of(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["deltaonnx"])


class StatefulRunner:
    """Runs a converted model feeding each run's present state as the next run's past
    (docs/state_protocol.md), in ORT with the op library or in the numpy reference evaluator; the block
    gates' change-map inputs get an empty map (no map) unless the feeds hold one."""

    def __init__(self, converted: onnx.ModelProto, library: str | None = None) -> None:
        meta = metadata_of(converted)
        self.gates = meta.get("gates", [])
        self.no_maps = {gate["change_map"]: np.zeros((0, 1, 0, 0), np.uint8) for gate in self.gates}
        self.present_of = {entry["past"]: entry["present"] for entry in meta["state"]}
        self.map_outputs = [entry["output"] for entry in meta["maps"]]
        if library is None:
            from deltaonnx.reference import make_reference_evaluator

            evaluator = make_reference_evaluator(converted)
            self.output_names = [o.name for o in converted.graph.output]
            self._run = lambda feeds: evaluator.run(None, feeds)
        else:
            options = ort.SessionOptions()
            options.register_custom_ops_library(library)
            session = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self.output_names = [o.name for o in session.get_outputs()]
            self._run = lambda feeds: session.run(None, feeds)
        self.reset()

    def reset(self) -> None:
        self.state = {past: np.zeros((0, 0, 0, 0), np.float32) for past in self.present_of}

    def run(self, feeds: dict) -> dict:
        results = dict(zip(self.output_names, self._run({**self.no_maps, **feeds, **self.state})))
        self.state = {past: results[present] for past, present in self.present_of.items()}
        return results


def dense_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def video(shape, frames: int, rng: np.random.Generator, spatial_axes=(-2, -1)) -> list[np.ndarray]:
    """Frames with what video has: small local changes, a repeated frame, a large change."""
    current = rng.standard_normal(shape).astype(np.float32)
    sequence = [current]
    h_axis, w_axis = spatial_axes
    h, w = shape[h_axis], shape[w_axis]
    for index in range(1, frames):
        current = current.copy()
        if index == 2:
            pass  # an identical frame: nothing may change
        elif index == frames - 1:
            current += rng.standard_normal(shape).astype(np.float32)  # everything changes
        else:
            for _ in range(2):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                index_tuple = [slice(None)] * len(shape)
                index_tuple[h_axis] = slice(y, y + 3)
                index_tuple[w_axis] = slice(x, x + 4)
                patch = current[tuple(index_tuple)]
                current[tuple(index_tuple)] = patch + rng.standard_normal(patch.shape).astype(np.float32)
        sequence.append(current)
    return sequence


def assert_same_as_dense(original: onnx.ModelProto, converted: onnx.ModelProto, frames_by_input: list[dict],
                         library: str | None) -> StatefulRunner:
    """Every model output of every frame equals dense ORT on the original (rel err <= REL_TOL)."""
    dense = dense_session(original)
    runner = StatefulRunner(converted, library)
    output_names = [o.name for o in original.graph.output]
    for index, feeds in enumerate(frames_by_input):
        assert_outputs_close(dict(zip(output_names, dense.run(None, feeds))), runner.run(feeds), index)
    return runner


def assert_outputs_close(expected: dict, got: dict, index: int) -> None:
    """Every output in `expected` within REL_TOL of it in `got` (max abs error over max abs value)."""
    for name, want in expected.items():
        scale = max(float(np.max(np.abs(want))), 1e-6)
        error = float(np.max(np.abs(got[name] - want))) / scale
        assert error <= REL_TOL, f"frame {index}, output {name}: rel err {error:.2e}"


def model_input_shape(model: onnx.ModelProto, index: int = 0) -> list[int]:
    return [d.dim_value for d in model.graph.input[index].type.tensor_type.shape.dim]


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=10, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = ir_version
    return model


def tensor_info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def weights(rng, name, shape, scale=0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def const(name, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def nodes_of(model: onnx.ModelProto, op_type: str, domain: str | None = None) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type and (domain is None or n.domain == domain)]


def attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def conv_block_model(rng, activation_nodes, activation_inits=(), *, opset=17, out="out", channels=4, hw=12,
                     extra_opsets=()) -> onnx.ModelProto:
    """x[1,3,hw,hw] -> Conv(3x3, pads 1) -> "y" -> activation_nodes -> `out`."""
    inits = [weights(rng, "W", (channels, 3, 3, 3)), weights(rng, "B", (channels,), 0.5), *activation_inits]
    conv = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])
    return make_model(
        [conv, *activation_nodes], [tensor_info("x", [1, 3, hw, hw])], [tensor_info(out, None)], inits, opset,
        extra_opsets=extra_opsets,
    )


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo():
    return pytest.importorskip("zoo")


@pytest.fixture(scope="module")
def op_library():
    try:
        return deltaonnx.library_path("cpu")
    except FileNotFoundError as error:
        pytest.skip(f"op library not built: {error}")


ZOO_MODELS = ["cnn1", "resnet18_like", "mobilenetv2_like", "mobilenetv3_like", "yolov8_like", "unet_like", "nhwc_input"]

# --------------------------------------------------------------------------------------------------
# the key property: exact at threshold 0, frame after frame, in ORT with the op library
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_at_threshold_zero_equals_dense_ort_on_every_frame(zoo, op_library, name, rng):
    original = getattr(zoo, name)()
    converted, report = convert_with_report(original)
    assert report.converted_rows, report.render()
    shape = model_input_shape(original)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 6, rng, spatial)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_identical_frame_recomputes_nothing(zoo, op_library, rng):
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original)
    runner = StatefulRunner(converted, op_library)
    name = original.graph.input[0].name
    frame = rng.standard_normal(model_input_shape(original)).astype(np.float32)
    first = runner.run({name: frame})
    assert all(first[m].all() for m in runner.map_outputs)  # empty state: everything recomputed
    second = runner.run({name: frame.copy()})
    assert not any(second[m].any() for m in runner.map_outputs)


@pytest.mark.parametrize("name", ["cnn1", "resnet18_like", "mobilenetv3_like"])
def test_all_nodes_converts_every_eligible_node_and_stays_exact(zoo, op_library, name, rng):
    original = getattr(zoo, name)()
    converted, report = convert_with_report(original, all_nodes=True)
    assert all(row.decision != "dense" for row in report.rows)
    shape = model_input_shape(original)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_batch_of_streams_is_exact(zoo, op_library, rng):
    original = zoo.resnet18_like(batch=2)
    converted = deltaonnx.convert(original)
    shape = model_input_shape(original)
    assert shape[0] == 2
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


@pytest.mark.parametrize("name", ["cnn1", "nhwc_input"])
def test_numpy_reference_evaluator_agrees_with_dense(zoo, name, rng):
    """Library-independent check of the rewritten graph (the reference ops implement docs/ops.md)."""
    original = getattr(zoo, name)()
    converted = deltaonnx.convert(original)
    shape = model_input_shape(original)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng, spatial)]
    assert_same_as_dense(original, converted, frames, library=None)


def test_input_gate_applies_through_transpose_and_inner_threshold_elsewhere(zoo, rng):
    original = zoo.nhwc_input()
    converted, report = convert_with_report(original, threshold=0.05, inner_threshold=0.01, gate="pixel")
    by_source = {row.node: row for row in report.converted_rows}
    first = report.converted_rows[0]
    # NHWC: the first conv reads the input through a Transpose, so it gets the input gate.
    assert first.threshold == pytest.approx(0.05)
    assert all(row.threshold == pytest.approx(0.01) for row in report.converted_rows[1:])
    delta_nodes = {n.name: n for n in converted.graph.node if n.domain == DOMAIN and n.op_type.startswith("Delta") and n.op_type != "DeltaMapUnion"}
    for row in by_source.values():
        assert attr(delta_nodes[row.delta_name], "threshold") == pytest.approx(row.threshold)


def test_per_node_threshold_overrides_and_unknown_names_are_an_error(zoo):
    original = zoo.cnn1()
    names = [n.name for n in original.graph.node if n.op_type == "Conv"]
    _, report = convert_with_report(original, threshold=0.1, thresholds={names[1]: 0.25})
    taus = {row.node: row.threshold for row in report.converted_rows}
    assert taus[names[0]] == pytest.approx(0.1)
    assert taus[names[1]] == pytest.approx(0.25)
    with pytest.raises(ConversionError, match="unknown node names in thresholds.*'no_such_node'"):
        deltaonnx.convert(original, thresholds={"no_such_node": 0.1})
    with pytest.raises(ConversionError, match="threshold"):
        deltaonnx.convert(original, threshold=-0.5)


def test_conversion_options_object_and_keywords_are_one_call(zoo):
    """ConversionOptions is what convert takes; its fields as keywords mean the same, and replace its values."""
    original = zoo.cnn1()
    names = [n.name for n in original.graph.node if n.op_type == "Conv"]
    options = deltaonnx.ConversionOptions(threshold=0.1, thresholds={names[1]: 0.25}, gate="block")
    by_options = deltaonnx.convert(original, options)
    by_keywords = deltaonnx.convert(original, threshold=0.1, thresholds={names[1]: 0.25}, gate="block")
    assert by_options.SerializeToString() == by_keywords.SerializeToString()
    _, report = convert_with_report(original, options, threshold=0.2)  # a keyword replaces the options' value
    assert {r.node: r.threshold for r in report.converted_rows}[names[0]] == pytest.approx(0.2)
    assert options.threshold == 0.1  # frozen: the caller's options are never changed
    planned = inspect_model(original, options, threshold=0.3)
    assert {r.node: r.threshold for r in planned.converted_rows}[names[0]] == pytest.approx(0.3)
    with pytest.raises(TypeError, match="unknown conversion option.*'treshold'"):
        deltaonnx.convert(original, treshold=0.1)
    with pytest.raises(TypeError, match="ConversionOptions"):
        deltaonnx.convert(original, {"threshold": 0.1})
    with pytest.raises(ConversionError, match="threshold"):
        deltaonnx.ConversionOptions(threshold=-1.0)


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
        assert entry["decision"] in ("converted", "dense", "ineligible")
        assert entry["reason"]
        assert isinstance(entry["flops"], int) and entry["flops"] > 0
        if entry["decision"] == "converted":
            assert entry["op"] in ("DeltaConv", "DeltaPool") and entry["name"].startswith(entry["op"] + "_")
            assert entry["threshold"] is not None
        else:
            assert entry["threshold"] is None and entry["name"] == entry["source"]
    dense = [e for e in meta["nodes"] if e["decision"] == "dense"]
    assert dense and all("arithmetic intensity" in e["reason"] for e in dense)  # the SE convs
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


# --------------------------------------------------------------------------------------------------
# pass 1: normalisation
# --------------------------------------------------------------------------------------------------


def test_auto_pad_becomes_explicit_where_shapes_are_known_and_stays_where_not(op_library, rng):
    weight = weights(rng, "W", (4, 3, 4, 4))

    def model(h, w):
        conv = helper.make_node("Conv", ["x", "W"], ["out"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2])
        return make_model([conv], [tensor_info("x", [1, 3, h, w])], [tensor_info("out", None)], [weight])

    static = deltaonnx.convert(model(11, 12))
    node = nodes_of(static, "DeltaConv", DOMAIN)[0]
    assert attr(node, "auto_pad") is None
    assert list(attr(node, "pads")) == [1, 1, 2, 1]  # total 3 (H=11) and 2 (W=12), extra at the end
    frames = [{"x": f} for f in video([1, 3, 11, 12], 3, rng)]
    assert_same_as_dense(model(11, 12), static, frames, op_library)

    dynamic_model = model("H", "W")
    dynamic = deltaonnx.convert(dynamic_model)
    node = nodes_of(dynamic, "DeltaConv", DOMAIN)[0]
    assert attr(node, "auto_pad") == b"SAME_UPPER" or attr(node, "auto_pad") == "SAME_UPPER"
    assert attr(node, "pads") is None
    # One stream changing resolution mid-sequence: the ops recompute everything, still exact.
    frames = [{"x": f} for f in video([1, 3, 9, 13], 3, rng)] + [{"x": f} for f in video([1, 3, 16, 10], 3, rng)]
    assert_same_as_dense(dynamic_model, dynamic, frames, op_library)


def test_ir3_model_with_weights_as_inputs_and_opset7_converts(op_library, rng):
    inits = [weights(rng, "W", (4, 3, 3, 3)), weights(rng, "B", (4,))]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["y"], ["c"], min=0.0, max=6.0),  # Relu6 in opset < 11: attributes
        helper.make_node("Upsample", ["c"], ["out"], mode="nearest", scales=[1.0, 1.0, 2.0, 2.0]),
    ]
    inputs = [tensor_info("x", [1, 3, 8, 8]), tensor_info("W", [4, 3, 3, 3]), tensor_info("B", [4])]
    original = make_model(nodes, inputs, [tensor_info("out", None)], inits, opset=7, ir_version=3)
    converted = deltaonnx.convert(original)
    assert [i.name for i in converted.graph.input][:1] == ["x"]
    assert "W" not in [i.name for i in converted.graph.input]  # IR-3 weights were never real inputs
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert attr(node, "activation") == b"Clip" or attr(node, "activation") == "Clip"
    assert list(attr(node, "activation_params")) == [0.0, 6.0]
    dense = make_model(nodes, inputs[:1], [tensor_info("out", None)], inits, opset=7, ir_version=4)
    frames = [{"x": f} for f in video([1, 3, 8, 8], 3, rng)]
    assert_same_as_dense(dense, converted, frames, op_library)


def test_overridable_weights_are_ineligible(rng):
    inits = [weights(rng, "W", (4, 3, 3, 3))]
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv")
    model = make_model([conv], [tensor_info("x", [1, 3, 8, 8]), tensor_info("W", [4, 3, 3, 3])], [tensor_info("y", None)], inits)
    report = inspect_model(model)
    assert report.rows[0].decision == "ineligible"
    assert report.rows[0].reason.startswith("weights are an initializer listed as a graph input (overridable)")


def test_external_data_model_converts(tmp_path, rng):
    model = conv_block_model(rng, [helper.make_node("Relu", ["y"], ["out"])], channels=64)
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    converted = deltaonnx.convert(path)
    assert len(nodes_of(converted, "DeltaConv", DOMAIN)) == 1
    weight = [t for t in converted.graph.initializer if t.name == "W"][0]
    assert numpy_helper.to_array(weight).shape == (64, 3, 3, 3)


# --------------------------------------------------------------------------------------------------
# pass 2: BatchNormalization folding
# --------------------------------------------------------------------------------------------------


def _conv_bn_model(rng, *, second_reader=False, bias=True):
    channels = 5
    inits = [
        weights(rng, "W", (channels, 3, 3, 3)),
        const("scale", rng.uniform(0.5, 1.5, channels)),
        const("beta", rng.standard_normal(channels) * 0.1),
        const("mean", rng.standard_normal(channels) * 0.2),
        const("var", rng.uniform(0.5, 2.0, channels)),
    ]
    if bias:
        inits.append(weights(rng, "B", (channels,)))
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"] if bias else ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["y", "scale", "beta", "mean", "var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["bn"], ["out"], name="relu"),
    ]
    outputs = [tensor_info("out", None)]
    if second_reader:
        nodes.append(helper.make_node("Sigmoid", ["y"], ["side"]))
        outputs.append(tensor_info("side", None))
    return make_model(nodes, [tensor_info("x", [2, 3, 9, 9])], outputs, inits)


@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_folding_is_numerically_exact(rng, bias):
    original = _conv_bn_model(rng, bias=bias)
    model_ir = ir.serde.deserialize_model(original)
    InferShapes()(model_ir)
    assert FoldBatchNormIntoConv()(model_ir).modified
    folded = ir.serde.serialize_model(model_ir)
    assert not nodes_of(folded, "BatchNormalization")
    assert len(folded.graph.node) == 2
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    expected = dense_session(original).run(None, {"x": x})[0]
    got = dense_session(folded).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The source model's weights are untouched (new initializers hold the folded ones).
    assert numpy_helper.to_array([t for t in original.graph.initializer if t.name == "W"][0]).shape == (5, 3, 3, 3)


def test_batchnorm_not_folded_when_conv_output_has_another_reader(rng):
    original = _conv_bn_model(rng, second_reader=True)
    converted, report = convert_with_report(original)
    assert len(nodes_of(converted, "BatchNormalization")) == 1
    assert report.rows[0].fused == []


def test_converted_conv_reports_folded_batchnorm_and_fused_activation(op_library, rng):
    original = _conv_bn_model(rng)
    converted, report = convert_with_report(original)
    assert report.rows[0].fused == ["bn", "relu"]
    assert report.rows[0].activation == "Relu"
    assert [n.op_type for n in converted.graph.node] == ["DeltaConv"]
    frames = [{"x": f} for f in video([2, 3, 9, 9], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


# --------------------------------------------------------------------------------------------------
# pass 3: activation fusion, pattern by pattern
# --------------------------------------------------------------------------------------------------


def _n(op, inputs, outputs, **attributes):
    return helper.make_node(op, inputs, outputs, **attributes)


SIXTH = 1.0 / 6.0
ACTIVATION_PATTERNS = {
    # id: (nodes after the conv output "y", extra initializers, opset, expected activation, expected params)
    "relu": ([_n("Relu", ["y"], ["out"])], [], 17, "Relu", None),
    "leaky_relu": ([_n("LeakyRelu", ["y"], ["out"], alpha=0.1)], [], 17, "LeakyRelu", [0.1]),
    "leaky_relu_default": ([_n("LeakyRelu", ["y"], ["out"])], [], 17, "LeakyRelu", [0.01]),
    "relu6_clip_inputs": ([_n("Clip", ["y", "lo", "hi"], ["out"])], [const("lo", 0.0), const("hi", 6.0)], 13, "Clip", [0.0, 6.0]),
    "clip_constant_nodes": (
        [_n("Constant", [], ["lo"], value=const("lo", -0.5)), _n("Clip", ["y", "lo", ""], ["out"])],
        [], 17, "Clip", [-0.5, float(np.finfo(np.float32).max)],
    ),
    "relu6_clip_attributes": ([_n("Clip", ["y"], ["out"], min=0.0, max=6.0)], [], 10, "Clip", [0.0, 6.0]),
    "sigmoid": ([_n("Sigmoid", ["y"], ["out"])], [], 17, "Sigmoid", None),
    "tanh": ([_n("Tanh", ["y"], ["out"])], [], 17, "Tanh", None),
    "hard_sigmoid": ([_n("HardSigmoid", ["y"], ["out"], alpha=0.3, beta=0.4)], [], 17, "HardSigmoid", [0.3, 0.4]),
    "hard_swish_op": ([_n("HardSwish", ["y"], ["out"])], [], 17, "HardSwish", None),
    "hard_swish_from_hard_sigmoid": (
        [_n("HardSigmoid", ["y"], ["g"], alpha=SIXTH, beta=0.5), _n("Mul", ["y", "g"], ["out"])], [], 17, "HardSwish", None,
    ),
    "hard_swish_clip_then_div": (
        [_n("Add", ["y", "three"], ["a"]), _n("Clip", ["a", "zero", "six"], ["c"]), _n("Mul", ["y", "c"], ["m"]),
         _n("Div", ["m", "six"], ["out"])],
        [const("three", 3.0), const("zero", 0.0), const("six", 6.0)], 17, "HardSwish", None,
    ),
    "hard_swish_clip_then_mul_sixth": (
        [_n("Add", ["three", "y"], ["a"]), _n("Clip", ["a", "zero", "six"], ["c"]), _n("Mul", ["c", "y"], ["m"]),
         _n("Mul", ["m", "sixth"], ["out"])],
        [const("three", [3.0]), const("zero", 0.0), const("six", 6.0), const("sixth", SIXTH)], 17, "HardSwish", None,
    ),
    "hard_swish_scaled_gate": (
        [_n("Add", ["y", "three"], ["a"]), _n("Clip", ["a", "zero", "six"], ["c"]), _n("Div", ["c", "six"], ["g"]),
         _n("Mul", ["y", "g"], ["out"])],
        [const("three", 3.0), const("zero", 0.0), const("six", 6.0)], 17, "HardSwish", None,
    ),
    "prelu_single_slope": ([_n("PRelu", ["y", "slope"], ["out"])], [const("slope", [0.25])], 17, "PRelu", [0.25]),
    "prelu_per_channel": (
        [_n("PRelu", ["y", "slope"], ["out"])], [const("slope", np.array([0.1, 0.2, 0.3, 0.4]).reshape(4, 1, 1))], 17,
        "PRelu", [0.1, 0.2, 0.3, 0.4],
    ),
    "silu": ([_n("Sigmoid", ["y"], ["s"]), _n("Mul", ["y", "s"], ["out"])], [], 17, "SiLU", None),
    "swish_op": ([_n("Swish", ["y"], ["out"])], [], 24, "SiLU", None),
    "silu_swapped": ([_n("Sigmoid", ["y"], ["s"]), _n("Mul", ["s", "y"], ["out"])], [], 17, "SiLU", None),
    "softmax_over_channels": ([_n("Softmax", ["y"], ["out"], axis=1)], [], 13, "Softmax", None),
    "softmax_over_channels_negative_axis": ([_n("Softmax", ["y"], ["out"], axis=-3)], [], 17, "Softmax", None),
}


@pytest.mark.parametrize("pattern", sorted(ACTIVATION_PATTERNS))
def test_activation_pattern_is_fused_and_exact(op_library, rng, pattern):
    nodes, inits, opset, expected, params = ACTIVATION_PATTERNS[pattern]
    original = conv_block_model(rng, nodes, inits, opset=opset)
    converted, report = convert_with_report(original)
    assert [n.op_type for n in converted.graph.node if n.op_type != "Constant"] == ["DeltaConv"], pattern
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    activation = attr(node, "activation")
    assert (activation.decode() if isinstance(activation, bytes) else activation) == expected
    if params is None:
        assert attr(node, "activation_params") is None
    else:
        np.testing.assert_allclose(attr(node, "activation_params"), params, rtol=1e-6)
    assert report.rows[0].activation == expected
    assert node.output[0] == "out"  # the model's output keeps its name
    unused = {t.name for t in converted.graph.initializer} - {i for n in converted.graph.node for i in n.input}
    assert not unused, f"initializers left behind: {unused}"
    frames = [{"x": f} for f in video([1, 3, 12, 12], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


@pytest.mark.parametrize("opset, axis", [(12, 3), (12, -1), (17, 3), (17, -1)])
def test_channel_softmax_behind_a_channels_last_transpose_is_fused(op_library, rng, opset, axis):
    """Conv -> Transpose(NCHW->NHWC) -> Softmax(last axis), as MTCNN's and other converted-from-TF heads end: the
    Softmax moves into the DeltaConv (per pixel over channels: only recomputed pixels pay), the Transpose stays
    after it and produces the model's output under its name."""
    nodes = [_n("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), _n("Softmax", ["t"], ["out"], axis=axis)]
    original = conv_block_model(rng, nodes, opset=opset)
    converted, report = convert_with_report(original)
    assert [n.op_type for n in converted.graph.node] == ["DeltaConv", "Transpose"]
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert attr(node, "activation") in ("Softmax", b"Softmax")
    assert converted.graph.node[1].input[0] == node.output[0] and converted.graph.node[1].output[0] == "out"
    assert report.rows[0].activation == "Softmax"
    frames = [{"x": f} for f in video([1, 3, 12, 12], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


@pytest.mark.parametrize("opset, transposed", [(12, True), (13, False), (17, True)])
def test_dense_twin_of_a_fused_channel_softmax_equals_the_original(rng, opset, transposed):
    """DeltaSession's dense twin (moving cameras) turns the fused Softmax back into ONNX nodes valid in the
    model's opset: before 13 a Softmax over axis 1 would normalise C*H*W together."""
    from deltaonnx.graph_passes.dense_twin import dense_twin

    nodes = ([_n("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), _n("Softmax", ["t"], ["out"], axis=-1)] if transposed
             else [_n("Softmax", ["y"], ["out"], axis=1)])
    original = conv_block_model(rng, nodes, opset=opset)
    twin = dense_twin(deltaonnx.convert(original), ["out"])
    onnx.checker.check_model(twin)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    got = dense_session(twin).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, dense_session(original).run(None, {"x": x})[0], rtol=1e-5, atol=1e-7)


NOT_FUSED = {
    "conv_output_read_twice": (
        [_n("Relu", ["y"], ["r"]), _n("Add", ["r", "y"], ["out"])], [], 17,
    ),
    "prelu_spatial_slope": (
        [_n("PRelu", ["y", "slope"], ["out"])], [const("slope", np.full((1, 1, 12), 0.2))], 17,
    ),
    "clip_bound_computed": (
        [_n("ReduceMean", ["y"], ["lo"], keepdims=0), _n("Clip", ["y", "lo", ""], ["out"])], [], 17,
    ),
    "hard_sigmoid_gate_not_hard_swish": (
        [_n("HardSigmoid", ["y"], ["g"]), _n("Mul", ["y", "g"], ["out"])], [], 17,
    ),
    "swish_op_alpha_not_one": ([_n("Swish", ["y"], ["out"], alpha=2.0)], [], 24),
    "clip_min_above_max": ([_n("Clip", ["y", "hi", "lo"], ["out"])], [const("lo", 0.0), const("hi", 6.0)], 17),
    "clip_gate_wrong_constant": (
        [_n("Add", ["y", "two"], ["a"]), _n("Clip", ["a", "zero", "six"], ["c"]), _n("Mul", ["y", "c"], ["m"]),
         _n("Div", ["m", "six"], ["out"])],
        [const("two", 2.0), const("zero", 0.0), const("six", 6.0)], 17,
    ),
    # before opset 13, axis 1 normalises C*H*W together
    "softmax_axis_1_before_opset_13": ([_n("Softmax", ["y"], ["out"])], [], 12),
    "softmax_over_width": ([_n("Softmax", ["y"], ["out"], axis=-1)], [], 17),
    "softmax_behind_a_transpose_not_channels_last": (
        [_n("Transpose", ["y"], ["t"], perm=[0, 3, 2, 1]), _n("Softmax", ["t"], ["out"], axis=3)], [], 17,
    ),
    "softmax_behind_a_channels_last_transpose_over_width": (
        [_n("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), _n("Softmax", ["t"], ["out"], axis=2)], [], 17,
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_FUSED))
def test_non_patterns_are_left_as_they_are(op_library, rng, case):
    nodes, inits, opset = NOT_FUSED[case]
    original = conv_block_model(rng, nodes, inits, opset=opset)
    converted = deltaonnx.convert(original)
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert attr(node, "activation") is None
    kept = [n.op_type for n in converted.graph.node if n.domain == ""]
    assert kept == [n.op_type for n in nodes]
    frames = [{"x": f} for f in video([1, 3, 12, 12], 3, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


# --------------------------------------------------------------------------------------------------
# pass 4: the cost model and eligibility
# --------------------------------------------------------------------------------------------------


def _map_breaking_model(rng, with_depthwise_after_conv: bool):
    """x -> conv0 (3->8) -> [Reshape round trip: loses locality] -> depthwise 3x3 -> out, and optionally
    conv0 -> depthwise2 directly (receives conv0's map)."""
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "Wd", (c, 1, 3, 3)), weights(rng, "Wd2", (c, 1, 3, 3)),
             const("flat", [1, -1], np.int64), const("back", [1, c, 10, 10], np.int64)]
    nodes = [
        _n("Conv", ["x", "W0"], ["a"], name="conv0", pads=[1, 1, 1, 1]),
        _n("Reshape", ["a", "flat"], ["f"]),
        _n("Reshape", ["f", "back"], ["b"]),
        _n("Conv", ["b", "Wd"], ["out"], name="depthwise", group=c, pads=[1, 1, 1, 1]),
    ]
    outputs = [tensor_info("out", None)]
    if with_depthwise_after_conv:
        nodes.append(_n("Conv", ["a", "Wd2"], ["out2"], name="depthwise_mapped", group=c, pads=[1, 1, 1, 1]))
        outputs.append(tensor_info("out2", None))
    return make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], outputs, inits)


def test_cost_model_keeps_low_intensity_convs_dense_unless_a_map_arrives(op_library, rng):
    original = _map_breaking_model(rng, with_depthwise_after_conv=True)
    converted, report = convert_with_report(original)
    rows = {row.node: row for row in report.rows}
    assert rows["conv0"].decision == "converted"
    assert rows["depthwise"].decision == "dense"
    assert "low arithmetic intensity (9 FLOPs per input element read < 32)" == rows["depthwise"].reason
    assert rows["depthwise_mapped"].decision == "converted"
    assert "change map arrives" in rows["depthwise_mapped"].reason
    mapped = [n for n in nodes_of(converted, "DeltaConv", DOMAIN) if n.name == rows["depthwise_mapped"].delta_name][0]
    assert len(mapped.input) == 6 and mapped.input[5] == f"deltaonnx.map.{rows['conv0'].delta_name}"
    assert rows["depthwise"].flops == 2 * 8 * 1 * 9 * 100

    everything, report_all = convert_with_report(original, all_nodes=True)
    assert all(row.decision == "converted" for row in report_all.rows)
    frames = [{"x": f} for f in video([1, 3, 10, 10], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)
    assert_same_as_dense(original, everything, frames, op_library)


def test_first_conv_is_the_input_gate_even_when_cheap(rng):
    inits = [weights(rng, "W0", (4, 3, 3, 3)), weights(rng, "W1", (32, 4, 3, 3))]
    nodes = [_n("Conv", ["x", "W0"], ["a"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
             _n("Conv", ["a", "W1"], ["out"], name="body", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 16, 16])], [tensor_info("out", None)], inits)
    report = inspect_model(model, threshold=0.1)
    rows = {row.node: row for row in report.rows}
    assert rows["stem"].decision == "converted" and "input gate" in rows["stem"].reason
    assert rows["stem"].threshold == pytest.approx(0.1)
    assert rows["body"].threshold == 0.0
    assert not report.done


def test_maxpool_decisions_and_ineligible_pools(op_library, rng):
    inits = [weights(rng, "W", (16, 3, 3, 3))]
    nodes = [
        _n("MaxPool", ["x"], ["p"], name="pool_first", kernel_shape=[2, 2], strides=[2, 2]),  # feeds a converted conv
        _n("Conv", ["p", "W"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        _n("MaxPool", ["a"], ["b", "idx"], name="pool_indices", kernel_shape=[2, 2], strides=[2, 2]),
        _n("MaxPool", ["a"], ["c"], name="pool_storage", kernel_shape=[2, 2], storage_order=1),
        _n("MaxPool", ["a"], ["d"], name="pool_mapped", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        _n("GlobalAveragePool", ["d"], ["g"]),
        _n("MaxPool", ["g"], ["e"], name="pool_unmapped", kernel_shape=[1, 1]),
    ]
    outputs = [tensor_info(n, None) for n in ("b", "idx", "c", "e")]
    outputs[1] = tensor_info("idx", None, TensorProto.INT64)
    original = make_model(nodes, [tensor_info("x", [1, 3, 16, 16])], outputs, inits, opset=12)
    converted, report = convert_with_report(original)
    rows = {row.node: row for row in report.rows}
    assert rows["pool_first"].decision == "converted" and "reaches a converted op" in rows["pool_first"].reason
    assert rows["pool_indices"].decision == "ineligible" and "Indices" in rows["pool_indices"].reason
    assert rows["pool_storage"].decision == "ineligible" and "storage_order" in rows["pool_storage"].reason
    assert rows["pool_mapped"].decision == "converted"
    assert rows["pool_unmapped"].decision == "dense"
    frames = [{"x": f} for f in video([1, 3, 16, 16], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_ineligible_nodes_are_listed_with_reasons(rng):
    inits = [weights(rng, "W", (4, 3, 3, 3)), weights(rng, "Wt", (4, 2, 2, 2)),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float16), "Wh")]
    nodes = [
        _n("Conv", ["x", "W"], ["a"], name="conv"),
        _n("ConvTranspose", ["a", "Wt"], ["t"], name="deconv", strides=[2, 2]),
        _n("Conv", ["x", "x_weights"], ["v"], name="dynamic_weights"),
        _n("AveragePool", ["a"], ["ap"], name="avg", kernel_shape=[2, 2]),
        _n("Cast", ["a"], ["h"], to=TensorProto.FLOAT16),
        _n("Conv", ["h", "Wh"], ["hc"], name="half"),
    ]
    inputs = [tensor_info("x", [1, 3, 8, 8]), tensor_info("x_weights", [2, 3, 1, 1])]
    outputs = [tensor_info("t", None), tensor_info("v", None), tensor_info("ap", None), tensor_info("hc", None, TensorProto.FLOAT16)]
    report = inspect_model(make_model(nodes, inputs, outputs, inits))
    reasons = {row.node: (row.decision, row.reason) for row in report.rows}
    assert reasons["conv"][0] == "converted"
    assert reasons["deconv"] == ("ineligible", "ConvTranspose is not supported (only Conv)")
    assert reasons["dynamic_weights"] == ("ineligible", "weights are a graph input, not a constant")
    assert reasons["avg"] == ("ineligible", "AveragePool has no Delta op (only MaxPool)")
    assert reasons["half"] == ("ineligible", "float16 tensors (only float32)")
    assert "ineligible" in report.render() and "ConvTranspose is not supported" in report.render()


# --------------------------------------------------------------------------------------------------
# pass 5: change maps wired through locality-keeping ops
# --------------------------------------------------------------------------------------------------


def _map_input_of(model: onnx.ModelProto, source_name: str, report) -> str | None:
    delta = [row.delta_name for row in report.rows if row.node == source_name][0]
    node = [n for n in model.graph.node if n.name == delta][0]
    position = 5 if node.op_type == "DeltaConv" else 3
    return node.input[position] if len(node.input) > position and node.input[position] else None


def _producer(model: onnx.ModelProto, value: str) -> onnx.NodeProto:
    return [n for n in model.graph.node if value in n.output][0]


def test_maps_meet_in_a_union_at_residual_add_and_concat(op_library, rng):
    c = 6
    inits = [weights(rng, name, (c, 3 if name == "Wa" else c, 3, 3)) for name in ("Wa", "Wb", "Wc", "Wd")]
    inits += [weights(rng, "We", (c, 2 * c, 1, 1)), const("bias", rng.standard_normal((c, 1, 1)))]
    nodes = [
        _n("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
        _n("Add", ["a", "b"], ["s"]),               # residual: union
        _n("Add", ["s", "bias"], ["s2"]),           # per-channel constant: map unchanged
        _n("Conv", ["s2", "Wc"], ["c"], name="c", pads=[1, 1, 1, 1]),
        _n("Conv", ["a", "Wd"], ["d"], name="d", pads=[1, 1, 1, 1]),
        _n("Concat", ["c", "d"], ["cat"], axis=1),  # channels: union
        _n("Conv", ["cat", "We"], ["out"], name="e"),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original)
    map_c = _map_input_of(converted, "c", report)
    union_c = _producer(converted, map_c)
    assert (union_c.domain, union_c.op_type) == (DOMAIN, "DeltaMapUnion")
    assert sorted(union_c.input) == sorted(f"deltaonnx.map.{report.rows[i].delta_name}" for i in (0, 1))
    union_e = _producer(converted, _map_input_of(converted, "e", report))
    assert union_e.op_type == "DeltaMapUnion" and len(union_e.input) == 2
    frames = [{"x": f} for f in video([1, 3, 10, 10], 5, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_maps_follow_nearest_resize_with_constant_scales_and_computed_sizes(op_library, rng):
    c = 4
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (c, c, 3, 3)), weights(rng, "W2", (c, c, 3, 3)),
             const("scales", [1.0, 1.0, 2.0, 2.0]), const("empty", np.zeros(0)), const("hw2", [2, 2], np.int64),
             const("nc", [0], np.int64), const("two", [2], np.int64), const("four", [4], np.int64)]
    nodes = [
        _n("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("Resize", ["a", "", "scales"], ["up"], mode="nearest"),
        _n("Conv", ["up", "W1"], ["b"], name="b", pads=[1, 1, 1, 1]),
        # sizes computed from the shape at run time (as dynamic-size exports do)
        _n("Shape", ["b"], ["shape"]),
        _n("Slice", ["shape", "two", "four"], ["hw"]),
        _n("Mul", ["hw", "hw2"], ["hw_up"]),
        _n("Slice", ["shape", "nc", "two"], ["n_c"]),
        _n("Concat", ["n_c", "hw_up"], ["sizes"], axis=0),
        _n("Resize", ["b", "", "empty", "sizes"], ["up2"], mode="nearest", nearest_mode="floor",
           coordinate_transformation_mode="asymmetric"),
        _n("Conv", ["up2", "W2"], ["out"], name="c", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 6, 7])], [tensor_info("out", None)], inits, opset=13)
    converted, report = convert_with_report(original)
    resize_b = _producer(converted, _map_input_of(converted, "b", report))
    assert resize_b.op_type == "Resize" and attr(resize_b, "mode") == b"nearest"
    map_scales = [t for t in converted.graph.initializer if t.name == resize_b.input[2]][0]
    assert numpy_helper.to_array(map_scales).tolist() == [1.0, 1.0, 2.0, 2.0]
    resize_c = _producer(converted, _map_input_of(converted, "c", report))
    assert resize_c.op_type == "Resize" and attr(resize_c, "nearest_mode") == b"floor"
    assert _producer(converted, resize_c.input[3]).op_type == "Add"  # sizes * [1,0,1,1] + [0,1,0,0]
    frames = [{"x": f} for f in video([1, 3, 6, 7], 5, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_global_context_and_changing_operands_lose_the_map(op_library, rng):
    """Squeeze-excite with a dense scale path: the scale comes from global pooling, changes with any
    pixel and has no map, so the product cannot carry one; the next conv compares its whole input."""
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (c, c, 3, 3))]
    nodes = [
        _n("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("GlobalAveragePool", ["a"], ["g"]),
        _n("Sigmoid", ["g"], ["s"]),
        _n("Mul", ["a", "s"], ["scaled"]),
        _n("Conv", ["scaled", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original)
    assert _map_input_of(converted, "b", report) is None
    frames = [{"x": f} for f in video([1, 3, 10, 10], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


def test_channel_split_and_slice_keep_the_map(op_library, rng):
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (4, 4, 3, 3)), weights(rng, "W2", (4, 2, 3, 3)),
             const("starts", [2], np.int64), const("ends", [4], np.int64), const("axes", [1], np.int64)]
    nodes = [
        _n("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("Split", ["a"], ["s0", "s1"], axis=1),
        _n("Conv", ["s1", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
        _n("Slice", ["s0", "starts", "ends", "axes"], ["sl"]),
        _n("Conv", ["sl", "W2"], ["out2"], name="c", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 9, 9])], [tensor_info("out", None), tensor_info("out2", None)], inits, opset=11)
    converted, report = convert_with_report(original)
    map_a = f"deltaonnx.map.{report.rows[0].delta_name}"
    assert _map_input_of(converted, "b", report) == map_a
    assert _map_input_of(converted, "c", report) == map_a
    frames = [{"x": f} for f in video([1, 3, 9, 9], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


@pytest.mark.parametrize("opset, union_op", [(17, "Max"), (11, "Cast")])
def test_maps_of_unprovably_equal_shapes_meet_in_a_broadcasting_union(op_library, rng, opset, union_op):
    """A branch through an op shape inference does not know (com.microsoft Gelu) leaves its shapes
    unknown: the residual Add cannot prove both maps have one shape, so the union is a broadcasting
    uint8 Max (from opset 12; before, Cast to bool, Or, Cast back)."""
    c = 4
    inits = [weights(rng, name, (c, 3 if name == "Wa" else c, 3, 3)) for name in ("Wa", "Wb", "Wc", "Wd")]
    nodes = [
        _n("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
        helper.make_node("Gelu", ["a"], ["g"], domain="com.microsoft"),
        _n("Conv", ["g", "Wc"], ["cc"], name="c", pads=[1, 1, 1, 1]),
        _n("Add", ["b", "cc"], ["s"]),
        _n("Conv", ["s", "Wd"], ["out"], name="d", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits, opset,
                          extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    converted, report = convert_with_report(original)
    assert _map_input_of(converted, "c", report) is None  # Gelu of another domain: no map
    union = _producer(converted, _map_input_of(converted, "d", report))
    assert (union.domain, union.op_type) == ("", union_op)
    frames = [{"x": f} for f in video([1, 3, 10, 10], 5, rng)]
    assert_same_as_dense(original, converted, frames, op_library)


# --------------------------------------------------------------------------------------------------
# real third-party models (fetched into a cache by models/real_material.py; skipped when offline)
# --------------------------------------------------------------------------------------------------

REAL_MODELS = {
    # name: (fetcher, layout, two resolutions the stream switches between)
    "mtcnn_pnet": ("mtcnn_pnet", "NHWC", [(1, 72, 96, 3), (1, 60, 80, 3)]),
    "nudenet_320n": ("nudenet_320n", "NCHW", [(1, 3, 128, 160), (1, 3, 96, 96)]),
}


def fetched_real_model(name: str):
    """The path of REAL_MODELS[name], fetched into the cache (the test skips when offline)."""
    real_material = pytest.importorskip("real_material")
    try:
        return getattr(real_material, REAL_MODELS[name][0])()
    except real_material.DownloadError as error:
        pytest.skip(f"offline? {error}")


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_at_threshold_zero_equals_dense_ort(op_library, name):
    synthetic_video = pytest.importorskip("synthetic_video")
    _, layout, resolutions = REAL_MODELS[name]
    path = fetched_real_model(name)
    original = onnx.load(str(path))
    original.ir_version = min(original.ir_version, 10)
    converted, report = convert_with_report(path, threshold=0.0)
    assert not [row for row in report.rows if row.decision == "ineligible"]
    input_name = original.graph.input[0].name
    frames = []
    for seed, shape in enumerate(resolutions):  # a resolution change mid-stream: the state restarts
        frames += [{input_name: f.data} for f in synthetic_video.sequence(shape, 4, seed, layout=layout)]
    assert_same_as_dense(original, converted, frames, op_library)


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_flops_at_an_input_shape_agree_between_inspect_and_stats(op_library, name):
    """PNet and 320n have dynamic input sizes: inspect --input-shape and DeltaSession.stats() (at the shapes of
    the last run) both count their FLOPs, and agree, for the original and the converted model."""
    path = fetched_real_model(name)
    converted, report = convert_with_report(path, threshold=0.1)
    assert any(row.flops is None for row in report.rows if row.is_conv)  # unknown without a shape
    shape = REAL_MODELS[name][2][0]
    input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    would = inspect_model(path, input_shapes={input_name: shape})
    did = inspect_model(converted, input_shapes={input_name: shape})
    for found in (would, did):
        assert all(row.flops for row in found.rows if row.is_conv)
    assert would.conv_flops() == did.conv_flops()

    session = deltaonnx.DeltaSession(converted)
    session.run(None, {input_name: np.random.default_rng(0).random(shape, dtype=np.float32)})
    stats = session.stats()
    converted_rows = {row.delta_name: row.flops for row in did.rows if row.converted}
    gates = {gate["node"] for gate in session.metadata["gates"]}  # the DeltaGate: a map, no FLOPs
    assert gates and all(stats["nodes"][gate]["flops"] is None for gate in gates)
    assert {node: entry["flops"] for node, entry in stats["nodes"].items() if node not in gates} == converted_rows


def test_squeeze_excite_scale_from_a_converted_conv_broadcasts_its_map(op_library, rng):
    """When the scale is itself a Delta op's output ([N,C,1,1] with a [N,1,1,1] map), the product's map
    is the broadcasting union: unchanged pixels stay unmarked as long as the scale does not change."""
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "We", (c, c, 1, 1)), weights(rng, "W1", (c, c, 3, 3))]
    nodes = [
        _n("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        _n("GlobalAveragePool", ["a"], ["g"]),
        _n("Conv", ["g", "We"], ["e"], name="excite"),
        _n("HardSigmoid", ["e"], ["s"]),
        _n("Mul", ["a", "s"], ["scaled"]),
        _n("Conv", ["scaled", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original, all_nodes=True)
    union = _producer(converted, _map_input_of(converted, "b", report))
    assert union.op_type == "Max"
    frames = [{"x": f} for f in video([1, 3, 10, 10], 4, rng)]
    assert_same_as_dense(original, converted, frames, op_library)
