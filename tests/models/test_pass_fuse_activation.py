"""The activation fusion pass, pattern by pattern: each fused activation equals the original in ORT, and what
is not a pattern stays as it is."""
from __future__ import annotations


import numpy as np
import onnx
import pytest

from builders import DOMAIN
import deltaonnx
from deltaonnx.convert import convert_with_report
from conversion import assert_same_as_dense, attr, const, conv_block_model, dense_session, nodes_of, op_node, video


SIXTH = 1.0 / 6.0
ACTIVATION_PATTERNS = {
    # id: (nodes after the conv output "y", extra initializers, opset, expected activation, expected params)
    "relu": ([op_node("Relu", ["y"], ["out"])], [], 17, "Relu", None),
    "leaky_relu": ([op_node("LeakyRelu", ["y"], ["out"], alpha=0.1)], [], 17, "LeakyRelu", [0.1]),
    "leaky_relu_default": ([op_node("LeakyRelu", ["y"], ["out"])], [], 17, "LeakyRelu", [0.01]),
    "relu6_clip_inputs": ([op_node("Clip", ["y", "lo", "hi"], ["out"])], [const("lo", 0.0), const("hi", 6.0)], 13, "Clip", [0.0, 6.0]),
    "clip_constant_nodes": (
        [op_node("Constant", [], ["lo"], value=const("lo", -0.5)), op_node("Clip", ["y", "lo", ""], ["out"])],
        [], 17, "Clip", [-0.5, float(np.finfo(np.float32).max)],
    ),
    "relu6_clip_attributes": ([op_node("Clip", ["y"], ["out"], min=0.0, max=6.0)], [], 10, "Clip", [0.0, 6.0]),
    "sigmoid": ([op_node("Sigmoid", ["y"], ["out"])], [], 17, "Sigmoid", None),
    "tanh": ([op_node("Tanh", ["y"], ["out"])], [], 17, "Tanh", None),
    "hard_sigmoid": ([op_node("HardSigmoid", ["y"], ["out"], alpha=0.3, beta=0.4)], [], 17, "HardSigmoid", [0.3, 0.4]),
    "hard_swish_op": ([op_node("HardSwish", ["y"], ["out"])], [], 17, "HardSwish", None),
    "hard_swish_from_hard_sigmoid": (
        [op_node("HardSigmoid", ["y"], ["g"], alpha=SIXTH, beta=0.5), op_node("Mul", ["y", "g"], ["out"])], [], 17, "HardSwish", None,
    ),
    "hard_swish_clip_then_div": (
        [op_node("Add", ["y", "three"], ["a"]), op_node("Clip", ["a", "zero", "six"], ["c"]), op_node("Mul", ["y", "c"], ["m"]),
         op_node("Div", ["m", "six"], ["out"])],
        [const("three", 3.0), const("zero", 0.0), const("six", 6.0)], 17, "HardSwish", None,
    ),
    "hard_swish_clip_then_mul_sixth": (
        [op_node("Add", ["three", "y"], ["a"]), op_node("Clip", ["a", "zero", "six"], ["c"]), op_node("Mul", ["c", "y"], ["m"]),
         op_node("Mul", ["m", "sixth"], ["out"])],
        [const("three", [3.0]), const("zero", 0.0), const("six", 6.0), const("sixth", SIXTH)], 17, "HardSwish", None,
    ),
    "hard_swish_scaled_gate": (
        [op_node("Add", ["y", "three"], ["a"]), op_node("Clip", ["a", "zero", "six"], ["c"]), op_node("Div", ["c", "six"], ["g"]),
         op_node("Mul", ["y", "g"], ["out"])],
        [const("three", 3.0), const("zero", 0.0), const("six", 6.0)], 17, "HardSwish", None,
    ),
    "prelu_single_slope": ([op_node("PRelu", ["y", "slope"], ["out"])], [const("slope", [0.25])], 17, "PRelu", [0.25]),
    "prelu_per_channel": (
        [op_node("PRelu", ["y", "slope"], ["out"])], [const("slope", np.array([0.1, 0.2, 0.3, 0.4]).reshape(4, 1, 1))], 17,
        "PRelu", [0.1, 0.2, 0.3, 0.4],
    ),
    "silu": ([op_node("Sigmoid", ["y"], ["s"]), op_node("Mul", ["y", "s"], ["out"])], [], 17, "SiLU", None),
    "swish_op": ([op_node("Swish", ["y"], ["out"])], [], 24, "SiLU", None),
    "silu_swapped": ([op_node("Sigmoid", ["y"], ["s"]), op_node("Mul", ["s", "y"], ["out"])], [], 17, "SiLU", None),
    "softmax_over_channels": ([op_node("Softmax", ["y"], ["out"], axis=1)], [], 13, "Softmax", None),
    "softmax_over_channels_negative_axis": ([op_node("Softmax", ["y"], ["out"], axis=-3)], [], 17, "Softmax", None),
}


@pytest.mark.parametrize("pattern", sorted(ACTIVATION_PATTERNS))
def test_activation_pattern_is_fused_and_exact(cpu_op_library, rng, pattern):
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
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("opset, axis", [(12, 3), (12, -1), (17, 3), (17, -1)])
def test_channel_softmax_behind_a_channels_last_transpose_is_fused(cpu_op_library, rng, opset, axis):
    """Conv -> Transpose(NCHW->NHWC) -> Softmax(last axis), as MTCNN's and other converted-from-TF heads end: the
    Softmax moves into the DeltaConv (per pixel over channels: only recomputed pixels pay), the Transpose stays
    after it and produces the model's output under its name."""
    nodes = [op_node("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), op_node("Softmax", ["t"], ["out"], axis=axis)]
    original = conv_block_model(rng, nodes, opset=opset)
    converted, report = convert_with_report(original)
    assert [n.op_type for n in converted.graph.node] == ["DeltaConv", "Transpose"]
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert attr(node, "activation") in ("Softmax", b"Softmax")
    assert converted.graph.node[1].input[0] == node.output[0] and converted.graph.node[1].output[0] == "out"
    assert report.rows[0].activation == "Softmax"
    frames = [{"x": f} for f in video([1, 3, 12, 12], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("opset, transposed", [(12, True), (13, False), (17, True)])
def test_dense_twin_of_a_fused_channel_softmax_equals_the_original(rng, opset, transposed):
    """DeltaSession's dense twin (moving cameras) turns the fused Softmax back into ONNX nodes valid in the
    model's opset: before 13 a Softmax over axis 1 would normalise C*H*W together."""
    from deltaonnx.graph_passes.dense_twin import dense_twin

    nodes = ([op_node("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), op_node("Softmax", ["t"], ["out"], axis=-1)] if transposed
             else [op_node("Softmax", ["y"], ["out"], axis=1)])
    original = conv_block_model(rng, nodes, opset=opset)
    twin = dense_twin(deltaonnx.convert(original), ["out"])
    onnx.checker.check_model(twin)
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    got = dense_session(twin).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, dense_session(original).run(None, {"x": x})[0], rtol=1e-5, atol=1e-7)


NOT_FUSED = {
    "conv_output_read_twice": (
        [op_node("Relu", ["y"], ["r"]), op_node("Add", ["r", "y"], ["out"])], [], 17,
    ),
    "prelu_spatial_slope": (
        [op_node("PRelu", ["y", "slope"], ["out"])], [const("slope", np.full((1, 1, 12), 0.2))], 17,
    ),
    "clip_bound_computed": (
        [op_node("ReduceMean", ["y"], ["lo"], keepdims=0), op_node("Clip", ["y", "lo", ""], ["out"])], [], 17,
    ),
    "hard_sigmoid_gate_not_hard_swish": (
        [op_node("HardSigmoid", ["y"], ["g"]), op_node("Mul", ["y", "g"], ["out"])], [], 17,
    ),
    "swish_op_alpha_not_one": ([op_node("Swish", ["y"], ["out"], alpha=2.0)], [], 24),
    "clip_min_above_max": ([op_node("Clip", ["y", "hi", "lo"], ["out"])], [const("lo", 0.0), const("hi", 6.0)], 17),
    "clip_gate_wrong_constant": (
        [op_node("Add", ["y", "two"], ["a"]), op_node("Clip", ["a", "zero", "six"], ["c"]), op_node("Mul", ["y", "c"], ["m"]),
         op_node("Div", ["m", "six"], ["out"])],
        [const("two", 2.0), const("zero", 0.0), const("six", 6.0)], 17,
    ),
    # before opset 13, axis 1 normalises C*H*W together
    "softmax_axis_1_before_opset_13": ([op_node("Softmax", ["y"], ["out"])], [], 12),
    "softmax_over_width": ([op_node("Softmax", ["y"], ["out"], axis=-1)], [], 17),
    "softmax_behind_a_transpose_not_channels_last": (
        [op_node("Transpose", ["y"], ["t"], perm=[0, 3, 2, 1]), op_node("Softmax", ["t"], ["out"], axis=3)], [], 17,
    ),
    "softmax_behind_a_channels_last_transpose_over_width": (
        [op_node("Transpose", ["y"], ["t"], perm=[0, 2, 3, 1]), op_node("Softmax", ["t"], ["out"], axis=2)], [], 17,
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_FUSED))
def test_non_patterns_are_left_as_they_are(cpu_op_library, rng, case):
    nodes, inits, opset = NOT_FUSED[case]
    original = conv_block_model(rng, nodes, inits, opset=opset)
    converted = deltaonnx.convert(original)
    node = nodes_of(converted, "DeltaConv", DOMAIN)[0]
    assert attr(node, "activation") is None
    kept = [n.op_type for n in converted.graph.node if n.domain == ""]
    assert kept == [n.op_type for n in nodes]
    frames = [{"x": f} for f in video([1, 3, 12, 12], 3, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
