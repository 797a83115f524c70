"""Change maps wired through the ops that keep locality: unions at residual Add and Concat, Resize, channel
Split/Slice, broadcasting products, and where a map is lost."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from builders import DOMAIN
from deltaonnx.convert import convert_with_report
from conversion import assert_same_as_dense, attr, const, make_model, op_node, tensor_info, video, weights


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


def test_maps_meet_in_a_union_at_residual_add_and_concat(cpu_op_library, rng):
    c = 6
    inits = [weights(rng, name, (c, 3 if name == "Wa" else c, 3, 3)) for name in ("Wa", "Wb", "Wc", "Wd")]
    inits += [weights(rng, "We", (c, 2 * c, 1, 1)), const("bias", rng.standard_normal((c, 1, 1)))]
    nodes = [
        op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
        op_node("Add", ["a", "b"], ["s"]),               # residual: union
        op_node("Add", ["s", "bias"], ["s2"]),           # per-channel constant: map unchanged
        op_node("Conv", ["s2", "Wc"], ["c"], name="c", pads=[1, 1, 1, 1]),
        op_node("Conv", ["a", "Wd"], ["d"], name="d", pads=[1, 1, 1, 1]),
        op_node("Concat", ["c", "d"], ["cat"], axis=1),  # channels: union
        op_node("Conv", ["cat", "We"], ["out"], name="e"),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original, fuse_sum=False)  # the residual Add kept: its union
    map_c = _map_input_of(converted, "c", report)
    union_c = _producer(converted, map_c)
    assert (union_c.domain, union_c.op_type) == (DOMAIN, "DeltaMapUnion")
    assert sorted(union_c.input) == sorted(f"deltaonnx.map.{report.rows[i].delta_name}" for i in (0, 1))
    union_e = _producer(converted, _map_input_of(converted, "e", report))
    assert union_e.op_type == "DeltaMapUnion" and len(union_e.input) == 2
    frames = [{"x": f} for f in video([1, 3, 10, 10], 5, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
    # fused (the default): b takes a as its sum, with a's map as map_z; its map_out is the union c reads
    fused, report = convert_with_report(original)
    b = _producer(fused, _map_input_of(fused, "c", report))
    a = report.rows[0].delta_name
    assert b.name == report.rows[1].delta_name and list(b.input[6:]) == [_producer(fused, b.input[6]).output[0],
                                                                         f"deltaonnx.map.{a}"]
    assert _producer(fused, b.input[6]).name == a  # Z is a's output (its present state, named so)
    assert not [n for n in fused.graph.node if n.op_type == "Add" and "a" in n.input]
    assert_same_as_dense(original, fused, frames, cpu_op_library)


def test_a_union_already_built_is_not_built_again(cpu_op_library, rng):
    """A C2f block: Split a's output, a conv b on one half, the residual Add of that half and b, then Concat of
    both halves and the sum. The Add's map is a's map OR b's; the Concat reads a's map (twice, through the
    Split) and that union, so its map is the union itself: one DeltaMapUnion, not a second of the same maps.
    (With the Add fused into b as its sum, b's map already holds a's: the Concat's is one union of the two.)"""
    c = 4
    inits = [weights(rng, "Wa", (2 * c, 3, 3, 3)), weights(rng, "Wb", (c, c, 3, 3)), weights(rng, "We", (32, 3 * c, 1, 1)),
             numpy_helper.from_array(np.array([c, c], np.int64), "halves")]
    nodes = [
        op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("Split", ["a", "halves"], ["h1", "h2"], axis=1),
        op_node("Conv", ["h2", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
        op_node("Add", ["h2", "b"], ["s"]),
        op_node("Concat", ["h1", "h2", "s"], ["cat"], axis=1),
        op_node("Conv", ["cat", "We"], ["out"], name="e"),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original, fuse_sum=False)  # the Add kept, as in YOLOv8's C2f
    unions = [n for n in converted.graph.node if n.op_type == "DeltaMapUnion"]
    assert len(unions) == 1 and len(unions[0].input) == 2
    assert _map_input_of(converted, "e", report) == unions[0].output[0]
    frames = [{"x": f} for f in video([1, 3, 10, 10], 5, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
    fused, _ = convert_with_report(original)
    assert len([n for n in fused.graph.node if n.op_type == "DeltaMapUnion"]) == 1
    assert_same_as_dense(original, fused, frames, cpu_op_library)


def test_maps_follow_nearest_resize_with_constant_scales_and_computed_sizes(cpu_op_library, rng):
    c = 4
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (c, c, 3, 3)), weights(rng, "W2", (c, c, 3, 3)),
             const("scales", [1.0, 1.0, 2.0, 2.0]), const("empty", np.zeros(0)), const("hw2", [2, 2], np.int64),
             const("nc", [0], np.int64), const("two", [2], np.int64), const("four", [4], np.int64)]
    nodes = [
        op_node("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("Resize", ["a", "", "scales"], ["up"], mode="nearest"),
        op_node("Conv", ["up", "W1"], ["b"], name="b", pads=[1, 1, 1, 1]),
        # sizes computed from the shape at run time (as dynamic-size exports do)
        op_node("Shape", ["b"], ["shape"]),
        op_node("Slice", ["shape", "two", "four"], ["hw"]),
        op_node("Mul", ["hw", "hw2"], ["hw_up"]),
        op_node("Slice", ["shape", "nc", "two"], ["n_c"]),
        op_node("Concat", ["n_c", "hw_up"], ["sizes"], axis=0),
        op_node("Resize", ["b", "", "empty", "sizes"], ["up2"], mode="nearest", nearest_mode="floor",
           coordinate_transformation_mode="asymmetric"),
        op_node("Conv", ["up2", "W2"], ["out"], name="c", pads=[1, 1, 1, 1]),
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
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("kernel, group", [((2, 2), 1), ((3, 2), 2)])
def test_maps_follow_a_conv_transpose_whose_kernel_is_its_stride(cpu_op_library, rng, kernel, group):
    """Each output pixel of a ConvTranspose with kernel == stride reads one input pixel: the conv after it gets
    the map upsampled by the stride (and, exact behind a map, keeps no reference); other geometries lose it."""
    c = 4
    inits = [weights(rng, "W0", (c, 3, 1, 1)), weights(rng, "Wt", (c, c // group, *kernel)),
             const("bt", rng.standard_normal(c)), weights(rng, "W1", (c, c, 1, 1)),
             weights(rng, "Wt2", (c, c, 4, 4)), weights(rng, "W2", (c, c, 3, 3))]
    nodes = [
        # 1x1 convs: the maps are exactly the changed pixels, so a map shifted by one pixel shows
        op_node("Conv", ["x", "W0"], ["a"], name="a"),
        op_node("ConvTranspose", ["a", "Wt", "bt"], ["up"], kernel_shape=list(kernel), strides=list(kernel),
                group=group),
        op_node("Conv", ["up", "W1"], ["b"], name="b"),
        # k 4, s 2, p 1: an output pixel reads up to four input pixels: no map
        op_node("ConvTranspose", ["a", "Wt2"], ["up2"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]),
        op_node("Conv", ["up2", "W2"], ["c"], name="c", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 6, 7])], [tensor_info("b", None), tensor_info("c", None)],
                          inits, opset=13)
    converted, report = convert_with_report(original)
    frames = [{"x": f} for f in video([1, 3, 6, 7], 6, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
    upsample = _producer(converted, _map_input_of(converted, "b", report))
    assert upsample.op_type == "Resize" and upsample.input[0] == f"deltaonnx.map.{report.rows[0].delta_name}"
    assert (attr(upsample, "nearest_mode"), attr(upsample, "coordinate_transformation_mode")) == (b"floor", b"asymmetric")
    scales = [t for t in converted.graph.initializer if t.name == upsample.input[2]][0]
    assert numpy_helper.to_array(scales).tolist() == [1.0, 1.0, *map(float, kernel)]
    assert _map_input_of(converted, "c", report) is None


def test_global_context_and_changing_operands_lose_the_map(cpu_op_library, rng):
    """Squeeze-excite with a dense scale path: the scale comes from global pooling, changes with any
    pixel and has no map, so the product cannot carry one; the next conv compares its whole input."""
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (c, c, 3, 3))]
    nodes = [
        op_node("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("GlobalAveragePool", ["a"], ["g"]),
        op_node("Sigmoid", ["g"], ["s"]),
        op_node("Mul", ["a", "s"], ["scaled"]),
        op_node("Conv", ["scaled", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original)
    assert _map_input_of(converted, "b", report) is None
    frames = [{"x": f} for f in video([1, 3, 10, 10], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_channel_split_and_slice_keep_the_map(cpu_op_library, rng):
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "W1", (4, 4, 3, 3)), weights(rng, "W2", (4, 2, 3, 3)),
             const("starts", [2], np.int64), const("ends", [4], np.int64), const("axes", [1], np.int64)]
    nodes = [
        op_node("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("Split", ["a"], ["s0", "s1"], axis=1),
        op_node("Conv", ["s1", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
        op_node("Slice", ["s0", "starts", "ends", "axes"], ["sl"]),
        op_node("Conv", ["sl", "W2"], ["out2"], name="c", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 9, 9])], [tensor_info("out", None), tensor_info("out2", None)], inits, opset=11)
    converted, report = convert_with_report(original)
    map_a = f"deltaonnx.map.{report.rows[0].delta_name}"
    assert _map_input_of(converted, "b", report) == map_a
    assert _map_input_of(converted, "c", report) == map_a
    frames = [{"x": f} for f in video([1, 3, 9, 9], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("opset, union_op", [(17, "Max"), (11, "Cast")])
def test_maps_of_unprovably_equal_shapes_meet_in_a_broadcasting_union(cpu_op_library, rng, opset, union_op):
    """A branch through an op shape inference does not know (com.microsoft Gelu) leaves its shapes
    unknown: the residual Add cannot prove both maps have one shape, so the union is a broadcasting
    uint8 Max (from opset 12; before, Cast to bool, Or, Cast back)."""
    c = 4
    inits = [weights(rng, name, (c, 3 if name == "Wa" else c, 3, 3)) for name in ("Wa", "Wb", "Wc", "Wd")]
    nodes = [
        op_node("Conv", ["x", "Wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("Conv", ["a", "Wb"], ["b"], name="b", pads=[1, 1, 1, 1]),
        helper.make_node("Gelu", ["a"], ["g"], domain="com.microsoft"),
        op_node("Conv", ["g", "Wc"], ["cc"], name="c", pads=[1, 1, 1, 1]),
        op_node("Add", ["b", "cc"], ["s"]),
        op_node("Conv", ["s", "Wd"], ["out"], name="d", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits, opset,
                          extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    converted, report = convert_with_report(original)
    assert _map_input_of(converted, "c", report) is None  # Gelu of another domain: no map
    union = _producer(converted, _map_input_of(converted, "d", report))
    assert (union.domain, union.op_type) == ("", union_op)
    frames = [{"x": f} for f in video([1, 3, 10, 10], 5, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)

def test_squeeze_excite_scale_from_a_converted_conv_broadcasts_its_map(cpu_op_library, rng):
    """When the scale is itself a Delta op's output ([N,C,1,1] with a [N,1,1,1] map), the product's map
    is the broadcasting union, a DeltaMapUnion of the feature map's map and the per-item one: unchanged pixels stay
    unmarked as long as the scale does not change."""
    c = 8
    inits = [weights(rng, "W0", (c, 3, 3, 3)), weights(rng, "We", (c, c, 1, 1)), weights(rng, "W1", (c, c, 3, 3))]
    nodes = [
        op_node("Conv", ["x", "W0"], ["a"], name="a", pads=[1, 1, 1, 1]),
        op_node("GlobalAveragePool", ["a"], ["g"]),
        op_node("Conv", ["g", "We"], ["e"], name="excite"),
        op_node("HardSigmoid", ["e"], ["s"]),
        op_node("Mul", ["a", "s"], ["scaled"]),
        op_node("Conv", ["scaled", "W1"], ["out"], name="b", pads=[1, 1, 1, 1]),
    ]
    original = make_model(nodes, [tensor_info("x", [1, 3, 10, 10])], [tensor_info("out", None)], inits)
    converted, report = convert_with_report(original, all_nodes=True)
    union = _producer(converted, _map_input_of(converted, "b", report))
    assert (union.domain, union.op_type) == (DOMAIN, "DeltaMapUnion")
    frames = [{"x": f} for f in video([1, 3, 10, 10], 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)
