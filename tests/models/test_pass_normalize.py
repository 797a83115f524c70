"""The first passes: normalisation (explicit pads, old IRs and opsets, weights as inputs, external data) and
BatchNormalization folded into the conv."""
from __future__ import annotations


import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper

from builders import DOMAIN
import deltaonnx
from deltaonnx.convert import convert_with_report, inspect_model
from deltaonnx.graph_passes.fold_batchnorm import FoldBatchNormIntoConv
from deltaonnx.graph_passes.normalize import InferShapes
from conversion import (assert_same_as_dense, attr, const, conv_block_model, dense_session, make_model, nodes_of,
                        tensor_info, video, weights)


# --------------------------------------------------------------------------------------------------
# pass 1: normalisation
# --------------------------------------------------------------------------------------------------


def test_auto_pad_becomes_explicit_where_shapes_are_known_and_stays_where_not(cpu_op_library, rng):
    weight = weights(rng, "W", (4, 3, 4, 4))

    def model(h, w):
        conv = helper.make_node("Conv", ["x", "W"], ["out"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2])
        return make_model([conv], [tensor_info("x", [1, 3, h, w])], [tensor_info("out", None)], [weight])

    static = deltaonnx.convert(model(11, 12))
    node = nodes_of(static, "DeltaConv", DOMAIN)[0]
    assert attr(node, "auto_pad") is None
    assert list(attr(node, "pads")) == [1, 1, 2, 1]  # total 3 (H=11) and 2 (W=12), extra at the end
    frames = [{"x": f} for f in video([1, 3, 11, 12], 3, rng)]
    assert_same_as_dense(model(11, 12), static, frames, cpu_op_library)

    dynamic_model = model("H", "W")
    dynamic = deltaonnx.convert(dynamic_model)
    node = nodes_of(dynamic, "DeltaConv", DOMAIN)[0]
    assert attr(node, "auto_pad") == b"SAME_UPPER" or attr(node, "auto_pad") == "SAME_UPPER"
    assert attr(node, "pads") is None
    # One stream changing resolution mid-sequence: the ops recompute everything, still exact.
    frames = [{"x": f} for f in video([1, 3, 9, 13], 3, rng)] + [{"x": f} for f in video([1, 3, 16, 10], 3, rng)]
    assert_same_as_dense(dynamic_model, dynamic, frames, cpu_op_library)


def test_ir3_model_with_weights_as_inputs_and_opset7_converts(cpu_op_library, rng):
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
    assert_same_as_dense(dense, converted, frames, cpu_op_library)


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


def test_converted_conv_reports_folded_batchnorm_and_fused_activation(cpu_op_library, rng):
    original = _conv_bn_model(rng)
    converted, report = convert_with_report(original)
    assert report.rows[0].fused == ["bn", "relu"]
    assert report.rows[0].activation == "Relu"
    assert [n.op_type for n in converted.graph.node] == ["DeltaConv"]
    frames = [{"x": f} for f in video([2, 3, 9, 9], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
