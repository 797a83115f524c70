"""The cost model and eligibility: which convs and pools become Delta ops, which stay dense, and why."""
from __future__ import annotations


import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from builders import DOMAIN
from deltaonnx.convert import convert_with_report, inspect_model
from conversion import assert_same_as_dense, const, make_model, nodes_of, op_node, tensor_info, video, weights


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
        op_node("Conv", ["x", "W0"], ["a"], name="conv0", pads=[1, 1, 1, 1]),
        op_node("Reshape", ["a", "flat"], ["f"]),
        op_node("Reshape", ["f", "back"], ["b"]),
        op_node("Conv", ["b", "Wd"], ["out"], name="depthwise", group=c, pads=[1, 1, 1, 1]),
    ]
    outputs = [tensor_info("out", None)]
    if with_depthwise_after_conv:
        nodes.append(op_node("Conv", ["a", "Wd2"], ["out2"], name="depthwise_mapped", group=c, pads=[1, 1, 1, 1]))
        outputs.append(tensor_info("out2", None))
    return make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], outputs, inits)


def test_cost_model_keeps_low_intensity_convs_dense_unless_a_map_arrives(cpu_op_library, rng):
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
    assert_same_as_dense(original, converted, frames, cpu_op_library)
    assert_same_as_dense(original, everything, frames, cpu_op_library)


def _squeeze_excite_model(rng, pooled: bool, hw: int = 24):
    """x -> stem (3->16 3x3) -> Relu -> [GlobalAveragePool | nothing] -> reduce (16->4 1x1) -> Relu -> expand (4->16
    1x1) -> HardSigmoid, which scales the stem's output (Mul) -> project (16->16 1x1) -> out. Every conv after the stem
    is cheap per element read. pooled=False: the gate reads the whole activation through a Reshape round trip (no
    map arrives there), no squeeze."""
    inits = [weights(rng, "Ws", (16, 3, 3, 3)), weights(rng, "Wr", (4, 16, 1, 1)), weights(rng, "We", (16, 4, 1, 1)),
             weights(rng, "Wp", (16, 16, 1, 1)), const("flat", [1, -1], np.int64),
             const("back", [1, 16, hw, hw], np.int64)]
    nodes = [op_node("Conv", ["x", "Ws"], ["s"], name="stem", pads=[1, 1, 1, 1]), op_node("Relu", ["s"], ["a"]),
             *([op_node("GlobalAveragePool", ["a"], ["g"])] if pooled else
               [op_node("Reshape", ["a", "flat"], ["f"]), op_node("Reshape", ["f", "back"], ["g"])]),
             op_node("Conv", ["g", "Wr"], ["r"], name="reduce"), op_node("Relu", ["r"], ["rr"]),
             op_node("Conv", ["rr", "We"], ["e"], name="expand"), op_node("HardSigmoid", ["e"], ["gate"]),
             op_node("Mul", ["a", "gate"], ["scaled"]), op_node("Conv", ["scaled", "Wp"], ["out"], name="project")]
    return make_model(nodes, [tensor_info("x", [1, 3, hw, hw])], [tensor_info("out", None)], inits)


def test_a_tiny_conv_converts_where_its_map_lets_a_conv_after_it_convert(cpu_op_library, rng):
    """A squeeze-excite gate's convs read a [1, C, 1, 1] vector: converted, their map joins the stem's at the Mul and
    the project conv after it converts with a map instead of staying dense between Delta ops. Without the squeeze
    (the reduce and expand convs read whole activations of 36864 and 9216 elements, without a map) nothing changes."""
    original = _squeeze_excite_model(rng, pooled=True)
    # NCHW: the planner's decisions as they are (in a blocked region the gate's pool and convs become one
    # DeltaChannelGate, tests/models/test_blocked_layout_pass.py)
    converted, report = convert_with_report(original, layout="nchw")
    rows = {row.node: row for row in report.rows}
    assert rows["reduce"].decision == "converted" and "input is tiny" in rows["reduce"].reason, rows["reduce"].reason
    assert rows["expand"].decision == "converted" and "change map arrives" in rows["expand"].reason
    assert rows["project"].decision == "converted" and "change map arrives" in rows["project"].reason
    project = [n for n in nodes_of(converted, "DeltaConv", DOMAIN) if n.name == rows["project"].delta_name][0]
    assert project.input[3] == "" and project.input[5], "the project conv reads the Mul's map, keeps no reference"
    frames = [{"x": f} for f in video([1, 3, 24, 24], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)

    blocked = {row.node: row for row in convert_with_report(original)[1].rows}
    assert [blocked[n].decision for n in ("reduce", "expand", "project")] == ["fused", "fused", "converted"]

    unpooled = {row.node: row for row in convert_with_report(_squeeze_excite_model(rng, pooled=False, hw=48))[1].rows}
    assert [unpooled[n].decision for n in ("reduce", "expand", "project")] == ["dense"] * 3


def test_first_conv_is_the_input_gate_even_when_cheap(rng):
    inits = [weights(rng, "W0", (4, 3, 3, 3)), weights(rng, "W1", (32, 4, 3, 3))]
    nodes = [op_node("Conv", ["x", "W0"], ["a"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
             op_node("Conv", ["a", "W1"], ["out"], name="body", pads=[1, 1, 1, 1])]
    model = make_model(nodes, [tensor_info("x", [1, 3, 16, 16])], [tensor_info("out", None)], inits)
    report = inspect_model(model, threshold=0.1)
    rows = {row.node: row for row in report.rows}
    assert rows["stem"].decision == "converted" and "input gate" in rows["stem"].reason
    assert rows["stem"].threshold == pytest.approx(0.1)
    assert rows["body"].threshold == 0.0
    assert not report.done


def test_maxpool_decisions_and_ineligible_pools(cpu_op_library, rng):
    inits = [weights(rng, "W", (16, 3, 3, 3))]
    nodes = [
        op_node("MaxPool", ["x"], ["p"], name="pool_first", kernel_shape=[2, 2], strides=[2, 2]),  # feeds a converted conv
        op_node("Conv", ["p", "W"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        op_node("MaxPool", ["a"], ["b", "idx"], name="pool_indices", kernel_shape=[2, 2], strides=[2, 2]),
        op_node("MaxPool", ["a"], ["c"], name="pool_storage", kernel_shape=[2, 2], storage_order=1),
        op_node("MaxPool", ["a"], ["d"], name="pool_mapped", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        op_node("GlobalAveragePool", ["d"], ["g"]),
        op_node("MaxPool", ["g"], ["e"], name="pool_unmapped", kernel_shape=[1, 1]),
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
    assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_ineligible_nodes_are_listed_with_reasons(rng):
    inits = [weights(rng, "W", (4, 3, 3, 3)), weights(rng, "Wt", (4, 2, 2, 2)),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float16), "Wh")]
    nodes = [
        op_node("Conv", ["x", "W"], ["a"], name="conv"),
        op_node("ConvTranspose", ["a", "Wt"], ["t"], name="deconv", strides=[2, 2]),
        op_node("Conv", ["x", "x_weights"], ["v"], name="dynamic_weights"),
        op_node("AveragePool", ["a"], ["ap"], name="avg", kernel_shape=[2, 2]),
        op_node("Cast", ["a"], ["h"], to=TensorProto.FLOAT16),
        op_node("Conv", ["h", "Wh"], ["hc"], name="half"),
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
