"""convert's residual-sum fusion (graph_passes/fuse_residual_sum.py): DeltaConv -> Add(Y, Z) [-> activation] becomes
one DeltaConv with the sum input Z and its change map, where Z carries a map and has Y's shape; the fused models
equal dense ORT at threshold 0 over changing frames, in both layouts, through the op library and the numpy
reference; what does not qualify keeps its Add."""
from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import helper

import deltaonnx
from builders import DOMAIN
from conversion import (assert_same_as_dense, const, make_model, model_input_shape, op_node, tensor_info, video,
                        weights)
from deltaonnx.convert import convert_with_report
from deltaonnx.graph_passes.dense_twin import dense_twin


def _counts(model) -> collections.Counter:
    return collections.Counter(node.op_type for node in model.graph.node)


def _summed(model) -> list:
    return [n for n in model.graph.node if n.op_type == "DeltaConv" and len(n.input) > 6 and n.input[6]]


def _activation(node) -> str:
    found = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "activation"), b"")
    return found.decode() if isinstance(found, bytes) else found


# resnet18_like: 4 residual Adds, each followed by a Relu; mobilenetv2_like: 3 Adds of inverted residual blocks
# (no activation after them).
@pytest.mark.parametrize("name, adds, activation", [("resnet18_like", 4, "Relu"), ("mobilenetv2_like", 3, "")])
@pytest.mark.parametrize("layout", ["blocked", "nchw"])
def test_zoo_residual_adds_fused_and_exact(zoo, cpu_op_library, rng, name, adds, activation, layout):
    original = getattr(zoo, name)()
    fused = deltaonnx.convert(original, layout=layout)
    unfused = deltaonnx.convert(original, layout=layout, fuse_sum=False)
    assert _counts(unfused)["Add"] == adds and _counts(unfused)["DeltaMapUnion"] == adds
    assert _counts(fused)["Add"] == 0 and _counts(fused)["DeltaMapUnion"] == 0
    assert _counts(fused)["Relu"] == 0
    summed = _summed(fused)
    assert len(summed) == adds and all(n.input[7] for n in summed)  # every Z with its map
    assert {_activation(n) for n in summed} == {activation}
    if layout == "blocked":  # Z in Y's memory: no reorder was added for it
        assert _counts(fused)["DeltaReorder"] == _counts(unfused)["DeltaReorder"]
    frames = [{original.graph.input[0].name: f} for f in video(model_input_shape(original), 6, rng)]
    assert_same_as_dense(original, fused, frames, cpu_op_library)


def _residual_model(rng, *, relu_before_add=False, z_from_input=False, broadcast=False):
    """x -> a (conv) -> b (conv) -> Add(b, a or the input or a per-channel constant) -> Relu -> c (conv)."""
    c = 16
    inits = [weights(rng, "Wa", (c, 3, 3, 3)), weights(rng, "Wb", (c, c, 3, 3)), weights(rng, "Wc", (c, c, 1, 1))]
    nodes = [op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
             op_node("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1])]
    inputs = [tensor_info("x", [1, 3, 12, 12])]
    summand = "b"
    if relu_before_add:
        nodes.append(op_node("Relu", ["b"], ["b_act"]))
        summand = "b_act"
    z = "a"
    if z_from_input:
        inputs.append(tensor_info("skip", [1, c, 12, 12]))
        z = "skip"
    if broadcast:
        inits.append(const("per_pixel", rng.standard_normal((1, 1, 12, 12))))
        nodes.append(op_node("Mul", ["a", "per_pixel"], ["a_scaled"]))  # a map, yet Z's shape is Y's
        z = "a_scaled"
    nodes += [op_node("Add", [summand, z], ["s"]), op_node("Relu", ["s"], ["r"]),
              op_node("Conv", ["r", "Wc"], ["out"], name="c")]
    return make_model(nodes, inputs, [tensor_info("out", None)], inits)


def test_small_model_fused_exact_with_library_and_reference(cpu_op_library, rng):
    original = _residual_model(rng)
    for layout in ("blocked", "nchw"):
        converted = deltaonnx.convert(original, layout=layout, all_nodes=True)
        (summed,) = _summed(converted)
        assert _activation(summed) == "Relu" and _counts(converted)["Add"] == 0
        frames = [{"x": f} for f in video([1, 3, 12, 12], 6, rng)]
        assert_same_as_dense(original, converted, frames, cpu_op_library)
        assert_same_as_dense(original, converted, frames[:4], None)  # the numpy reference of the ops


@pytest.mark.parametrize("variant", ["relu_before_add", "z_from_input"])
def test_what_does_not_qualify_keeps_its_add(rng, variant):
    """A conv with its own activation (the sum comes after it), and a Z without a change map (a model input)."""
    original = _residual_model(rng, **{variant: True})
    converted = deltaonnx.convert(original, all_nodes=True)
    assert not _summed(converted) and _counts(converted)["Add"] == 1


@pytest.mark.parametrize("fused, layout_of_fused", [("b", "blocked"), ("d", "blocked_out")])
def test_z_changing_beyond_the_convs_window_is_recomputed(cpu_op_library, rng, fused, layout_of_fused):
    """Y = 1x1 conv of a 3x3 conv of x, Z = a 5x5 conv of x (or the other way round: the first conv in graph order
    takes the sum): Z changes where Y's window saw nothing change, and only map_z's marks make the fused op
    recompute there (docs/design.md#rule-4). Blocked: b reads the region, d enters it (blocked_out, its X NCHW,
    its Z blocked as its Y)."""
    c = 16
    inits = [weights(rng, "Wa", (c, 3, 3, 3)), weights(rng, "Wb", (c, c, 1, 1)), weights(rng, "Wd", (c, 3, 5, 5))]
    branches = [op_node("Conv", ["a", "Wb"], ["b"], name="b"), op_node("Conv", ["x", "Wd"], ["d"], name="d", pads=[2, 2, 2, 2])]
    nodes = [op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
             *(branches if fused == "b" else branches[::-1]), op_node("Add", ["b", "d"], ["out"])]
    original = make_model(nodes, [tensor_info("x", [1, 3, 16, 16])], [tensor_info("out", None)], inits)
    for layout in ("blocked", "nchw"):
        converted, report = convert_with_report(original, layout=layout, all_nodes=True)
        (summed,) = _summed(converted)
        assert summed.name == next(r.delta_name for r in report.rows if r.node == fused)
        want = layout_of_fused if layout == "blocked" else "nchw"
        assert next((helper.get_attribute_value(a).decode() for a in summed.attribute if a.name == "layout"), "nchw") == want
        frames = [{"x": f} for f in video([1, 3, 16, 16], 6, rng)]
        assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_z_through_locality_keeping_ops_fuses(cpu_op_library, rng):
    """Z = a * constant (a map through an elementwise op with a frame-invariant operand), Y's shape: fused."""
    original = _residual_model(rng, broadcast=True)
    converted = deltaonnx.convert(original, all_nodes=True, layout="nchw")
    assert len(_summed(converted)) == 1
    frames = [{"x": f} for f in video([1, 3, 12, 12], 5, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_padded_conv_reads_an_nchw_sum_padded_like_its_output(cpu_op_library, rng):
    """Padded channel blocks (docs/ops.md#padded-blocks): b (20 -> 36 channels, padded under b = 16 and 8) takes
    Z = d * a per-pixel constant, NCHW (that Mul is not layout-neutral): Z is read through a DeltaReorder of b's
    36 output channels, not its 20 input ones, and the model equals dense ORT through the library and the
    reference."""
    inits = [weights(rng, "Wa", (20, 3, 3, 3)), weights(rng, "Wb", (36, 20, 3, 3)), weights(rng, "Wd", (36, 3, 3, 3)),
             const("per_pixel", rng.standard_normal((1, 1, 12, 12)))]
    nodes = [op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
             op_node("Conv", ["x", "Wd"], ["d"], name="d", pads=[1, 1, 1, 1]),
             op_node("Mul", ["d", "per_pixel"], ["z"]),
             op_node("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
             op_node("Add", ["b", "z"], ["s"]), op_node("Relu", ["s"], ["out"])]
    original = make_model(nodes, [tensor_info("x", [1, 3, 12, 12])], [tensor_info("out", None)], inits)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    (summed,) = _summed(converted)
    assert _activation(summed) == "Relu"
    layout = next(helper.get_attribute_value(a).decode() for a in summed.attribute if a.name == "layout")
    assert layout == "blocked"
    (reorder,) = [n for n in converted.graph.node if n.op_type == "DeltaReorder" and summed.input[6] in n.output]
    assert {a.name: helper.get_attribute_value(a) for a in reorder.attribute}.get("channels") == 36
    frames = [{"x": f} for f in video([1, 3, 12, 12], 6, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
    assert_same_as_dense(original, converted, frames[:4], None)  # the numpy reference of the ops


def test_dense_twin_of_a_fused_model_is_conv_add_activation(zoo, rng):
    import onnxruntime as ort

    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original)
    twin = dense_twin(converted, [o.name for o in original.graph.output])
    assert not [n for n in twin.graph.node if n.domain == DOMAIN] and _counts(twin)["Add"] == 4
    x = rng.standard_normal(model_input_shape(original)).astype(np.float32)
    feeds = {original.graph.input[0].name: x}
    want = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_report_lists_the_fused_add(rng):
    original = _residual_model(rng)
    _, report = convert_with_report(original, all_nodes=True)
    row = next(r for r in report.rows if r.node == "b")
    assert row.activation == "Relu" and [op for op in ("Add", "Relu") if any(op in f for f in row.fused)] == ["Add", "Relu"]


@pytest.mark.parametrize("name", ["resnet18_like", "mobilenetv2_like"])
def test_fused_equals_unfused_behind_a_gate(zoo, cpu_op_library, rng, name):
    """At tau > 0 (the input gate decides, the inner ops exact) the fusion changes no value: every frame's outputs
    of the fused conversion equal the unfused one's (to float summation order), as do the gate's decisions."""
    from conversion import StatefulRunner, assert_outputs_close

    original = getattr(zoo, name)()
    fused = StatefulRunner(deltaonnx.convert(original, threshold=0.3), cpu_op_library)
    unfused = StatefulRunner(deltaonnx.convert(original, threshold=0.3, fuse_sum=False), cpu_op_library)
    outputs = [o.name for o in original.graph.output]
    for index, frame in enumerate(video(model_input_shape(original), 8, rng)):
        feeds = {original.graph.input[0].name: frame}
        got, want = fused.run(feeds), unfused.run(feeds)
        assert_outputs_close({k: want[k] for k in outputs}, got, index)
