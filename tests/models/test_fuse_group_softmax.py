"""graph_passes/fuse_group_softmax.py on a small YOLOv8-like head: the DFL Softmax over the box convs' outputs
(Reshape [N, C, -1] -> Concat(axis 2) -> Reshape [N, K, G, A] -> Transpose [0, 2, 1, 3] -> Softmax(axis 1))
becomes activation Softmax [G] of each box DeltaConv, the model still equals dense ORT at tau 0 (and so does
its dense twin); near-misses leave the graph as it is."""
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
              second_reader=False, box_activation=None, levels=2, batch=1, flat_channels=BOX) -> onnx.ModelProto:
    """x [batch,3,16,16] -> two strided convs (the levels) -> per level a box conv (BOX channels, 1x1) and a class
    conv (3 channels); box: flatten, Concat, Reshape `grouped`, Transpose `perm`, Softmax `axis`, the DFL 1x1
    conv over the bins, Reshape [batch, 4, A]; classes: flatten, Concat, Sigmoid."""
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
    if second_reader:  # the first box conv's output read outside the chain too
        nodes.append(helper.make_node("ReduceMax", ["box0"], ["box0_max"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("box0_max", TensorProto.FLOAT, None))
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


def test_dense_twin_of_the_fused_head_equals_the_original(rng):
    original = yolo_head(rng)
    converted, _ = convert_with_report(original, threshold=0.0, all_nodes=True)
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
    "a_second_reader_of_a_box_output": dict(second_reader=True),
    "box_conv_has_an_activation": dict(box_activation="Relu"),
    "opset_12_softmax_flattens": dict(opset=12),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_are_left_alone(cpu_op_library, rng, case):
    original = yolo_head(rng, **NEAR_MISSES[case])
    converted, report = convert_with_report(original, threshold=0.0, all_nodes=True)
    assert [n.name for n in converted.graph.node if n.op_type == "Softmax"] == ["dfl_softmax"]
    assert len(_box_convs(converted, report)) == 2  # converted, just not fused
    for node in _box_convs(converted, report):
        assert _attr(node, "activation", b"") in (b"", b"Relu")
    assert all(row.activation != "Softmax" for row in report.rows)
    _assert_equals_dense(original, converted, _frames(rng, count=3))
