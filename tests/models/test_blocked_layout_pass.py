"""convert's layout "blocked" (graph_passes/blocked_layout.py, docs/ops.md#blocked-layout): which Delta ops become
blocked, where DeltaReorder nodes go, what the metadata and the saved state say; and, with the op library, that
the blocked model equals dense ORT at threshold 0 frame after frame (the key property, for every block b)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx.convert import ConversionError
from deltaonnx.graph_passes.delta_ops import LAYOUTS


def _model(nodes, inputs, outputs, initializers, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "blocked", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _conv(rng, name, x, y, c_in, c_out, k=3, **attrs):
    w = numpy_helper.from_array((rng.standard_normal((c_out, c_in, k, k)) * 0.2).astype(np.float32), f"{name}.W")
    b = numpy_helper.from_array((rng.standard_normal(c_out) * 0.1).astype(np.float32), f"{name}.B")
    node = helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[k // 2] * 4, **attrs)
    return node, [w, b]


def neck_model(rng, hw=12) -> onnx.ModelProto:
    """x[1,3] -> stem(16) -> a(32) -> SiLU -> Split(16,16) -> b(16)(+residual Add) -> Concat(32+16) -> c(32),
    a 24-channel branch d with a Sigmoid (its pad lanes would not stay zero), Resize x2 of c, a per-channel Mul by a [1,32,1,1] constant, two model outputs: one a
    region tensor (c's SiLU), one outside (the Mul)."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, 16), ("a", "s", "a", 16, 32)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes += [helper.make_node("Sigmoid", ["a"], ["a_sig"]), helper.make_node("Mul", ["a", "a_sig"], ["a_act"])]
    inits.append(numpy_helper.from_array(np.array([16, 16], np.int64), "halves"))
    nodes.append(helper.make_node("Split", ["a_act", "halves"], ["h0", "h1"], axis=1))
    node, w = _conv(rng, "b", "h1", "bb", 16, 16)
    nodes += [node, helper.make_node("Add", ["h1", "bb"], ["res"])]
    inits += w
    nodes.append(helper.make_node("Concat", ["a_act", "res"], ["cat"], axis=1))
    node, w = _conv(rng, "c", "cat", "c", 48, 32, k=1)
    nodes += [node, helper.make_node("Sigmoid", ["c"], ["c_sig"]), helper.make_node("Mul", ["c", "c_sig"], ["out_c"])]
    inits += w
    node, w = _conv(rng, "d", "s", "d_pre", 16, 24)  # 24 channels padded, but Sigmoid(0) != 0: outside every region
    nodes += [node, helper.make_node("Sigmoid", ["d_pre"], ["d"])]
    inits += w
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    nodes.append(helper.make_node("Resize", ["out_c", "", "scales"], ["up"], mode="nearest"))
    inits.append(numpy_helper.from_array(rng.standard_normal((1, 32, 1, 1)).astype(np.float32), "per_channel"))
    nodes.append(helper.make_node("Mul", ["out_c", "per_channel"], ["scaled"]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("out_c", "up", "scaled", "d")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])], outputs, inits)


def _metadata(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["deltaonnx"])


def _layout(node: onnx.NodeProto) -> str:
    return next((helper.get_attribute_value(a).decode() for a in node.attribute if a.name == "layout"), "nchw")


def _by_source(model: onnx.ModelProto) -> dict[str, str]:
    """Source Conv name -> the layout of the Delta op it became."""
    names = {entry["name"]: entry["source"] for entry in _metadata(model)["nodes"]}
    return {names[n.name]: _layout(n) for n in model.graph.node if n.op_type == "DeltaConv"}


def _producer(model: onnx.ModelProto, value: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if value in n.output)


def _reorders(model: onnx.ModelProto) -> dict[str, str]:
    """Reordered tensor -> the reorder's direction."""
    return {n.input[0]: helper.get_attribute_value(n.attribute[0]).decode()
            for n in model.graph.node if n.op_type == "DeltaReorder"}


def test_regions_reorders_and_model_outputs(rng):
    original = neck_model(rng)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    # The stem reads the model input (3 channels): it reads NCHW and writes the region's memory itself
    # ("blocked_out"); d pads 24 channels under a Sigmoid; the rest is one region.
    assert _by_source(converted) == {"stem": "blocked_out", "a": "blocked", "b": "blocked", "c": "blocked",
                                     "d": "nchw"}
    reorders = _reorders(converted)
    delta_of = {entry["source"]: entry["name"] for entry in _metadata(converted)["nodes"]}
    a = next(n for n in converted.graph.node if n.name == delta_of["a"])
    d = next(n for n in converted.graph.node if n.name == delta_of["d"])
    assert _producer(converted, a.input[0]).name == delta_of["stem"]  # no reorder between stem and region
    assert _producer(converted, d.input[0]).op_type == "DeltaReorder"  # d reads the stem's output back in NCHW
    # Change maps travel through the reorders: every Delta op after the stem takes one (and keeps no X_ref).
    for node in converted.graph.node:
        if node.op_type == "DeltaConv" and node.name != delta_of["stem"]:
            assert node.input[5].startswith("deltaonnx.") and not node.input[3], node.name
    stem_y = _producer(converted, a.input[0]).output[0]
    assert reorders == {stem_y: "nchw", "deltaonnx.blocked.out_c": "nchw"}, reorders  # nothing enters by a reorder
    # Outputs keep their names and order; the region's output comes back NCHW through the reorder.
    assert [o.name for o in converted.graph.output][:4] == ["out_c", "up", "scaled", "d"]
    assert _producer(converted, "out_c").op_type == "DeltaReorder"
    assert _producer(converted, "up").input[0] == "out_c"  # Resize reads the NCHW copy
    assert _producer(converted, "scaled").input[0] == "out_c"  # so does the per-channel Mul
    meta = _metadata(converted)
    assert meta["layout"] == "blocked"
    layouts = {entry["source"]: entry["layout"] for entry in meta["nodes"]}
    assert layouts["d"] == "nchw (output channels 24 padded, Sigmoid(0) != 0)" and layouts["stem"] == "blocked_out"
    # The stem's X_ref is NCHW memory, listed as blocked with its Y_prev: under another block both start empty.
    blocked_state = {(entry["node"], entry["kind"]) for entry in meta["state"] if entry["layout"] == "blocked"}
    assert blocked_state == {(delta_of["stem"], "x_ref")} | {(delta_of[n], "y") for n in ("stem", "a", "b", "c")}
    # Both reorders read a change map and keep their last output: they redo only the marked pixels.
    for node in converted.graph.node:
        if node.op_type == "DeltaReorder":
            assert node.input[1] == f"deltaonnx.past.{node.name}.y" and node.input[2].startswith("deltaonnx.map")
            assert {"node": node.name, "past": node.input[1], "present": node.output[0], "kind": "y",
                    "layout": "nchw"} in meta["state"]


def test_mixed_concat_reads_its_nchw_part_through_a_reorder(rng):
    """A neck's Concat of an upsampled (NCHW) tensor and a region tensor stays in the region: the NCHW part is
    reordered to blocked, the Concat's output is not reordered back."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, 16), ("a", "s", "a", 16, 32), ("p", "a", "p", 32, 16)]:
        node, w = _conv(rng, *args, strides=[2, 2]) if args[0] == "p" else _conv(rng, *args)
        nodes.append(node)
        inits += w
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
    # align_corners: a geometry DeltaResize does not compute (tests/models/test_blocked_resize_pass.py), so the Resize
    # stays NCHW and its output enters the region through a reorder
    nodes += [helper.make_node("Resize", ["p", "", "scales"], ["up"], mode="nearest",
                               coordinate_transformation_mode="align_corners"),
              helper.make_node("Concat", ["up", "a"], ["cat"], axis=1)]
    node, w = _conv(rng, "q", "cat", "q", 48, 16, k=1)
    nodes.append(node)
    inits += w
    original = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("q", TensorProto.FLOAT, None)], inits)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    reorders = _reorders(converted)
    assert reorders.get("up") == "blocked"
    cat = next(n for n in converted.graph.node if n.op_type == "Concat")
    assert not any(n.op_type == "DeltaReorder" and n.input[0] == cat.output[0] for n in converted.graph.node)


def test_layout_blocked_is_the_default_nchw_on_request_and_bad_values_are_refused(rng):
    assert _metadata(deltaonnx.convert(neck_model(rng), all_nodes=True)) == _metadata(
        deltaonnx.convert(neck_model(rng), all_nodes=True, layout="blocked")) | {"deltaonnx_version": deltaonnx.__version__}
    converted = deltaonnx.convert(neck_model(rng), all_nodes=True, layout="nchw")
    assert not _reorders(converted) and set(_by_source(converted).values()) == {"nchw"}
    assert _metadata(converted)["layout"] == "nchw"
    with pytest.raises(ConversionError, match="layout must be one of nchw, blocked"):
        deltaonnx.convert(neck_model(rng), layout="nchwc")


def test_dense_twin_of_a_blocked_model_equals_the_original(rng):
    from deltaonnx.graph_passes.dense_twin import dense_twin
    import onnxruntime as ort

    original = neck_model(rng)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    twin = dense_twin(converted, [o.name for o in original.graph.output])
    assert not [n for n in twin.graph.node if n.domain == "com.deltaonnx"]
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    want = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ort.InferenceSession(twin.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# with the op library: the key property, whatever b the library picks
# --------------------------------------------------------------------------------------------------

BLOCKED_ZOO = ["cnn1", "resnet18_like", "mobilenetv2_like", "mobilenetv3_like", "yolov8_like", "unet_like"]
PADDED_ZOO = ("mobilenetv2_like", "mobilenetv3_like")  # with padded channel blocks (24, 40, 72, 120)


def test_depthwise_blocked_other_grouped_convs_nchw(rng):
    """x[1,3] -> stem(32) -> depthwise 3x3 (group 32) -> grouped 3x3 (group 2, 32->32) -> 1x1(32): the depthwise conv
    joins the region, the grouped one stays NCHW between two reorders (the op refuses it blocked)."""
    nodes, inits = [], []
    node, w = _conv(rng, "stem", "x", "s", 3, 32)
    nodes.append(node)
    inits += w
    for name, x, y, c_in, k, group in [("dw", "s", "d", 1, 3, 32), ("grouped", "d", "g", 16, 3, 2),
                                       ("head", "g", "out", 32, 1, 1)]:
        node, w = _conv(rng, name, x, y, c_in, 32, k=k, group=group)
        nodes.append(node)
        inits += w
    original = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                      [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    assert _by_source(converted) == {"stem": "blocked_out", "dw": "blocked", "grouped": "nchw", "head": "blocked"}
    layouts = {entry["source"]: entry["layout"] for entry in _metadata(converted)["nodes"]}
    assert layouts["grouped"] == "nchw (grouped convolution)"
    assert sorted(_reorders(converted).values()) == ["blocked", "nchw", "nchw"]  # around it, and the output


@pytest.mark.parametrize("name, pools, scales", [("mobilenetv2_like", 1, 0), ("mobilenetv3_like", 1, 3)])
def test_depthwise_convs_and_squeeze_excite_blocks_stay_in_the_region(name, pools, scales):
    """A depthwise conv (group = C = M) takes layout "blocked" (docs/ops.md#blocked-layout), its channels padded
    where not multiples of 16, so an inverted residual block is one region; a squeeze-excite block's global pool and
    per-channel Mul read the region's tensor as it lies (DeltaGlobalAveragePool, DeltaChannelScale), and so does the
    classifier's pool: mobilenetv2_like and mobilenetv3_like at 224 px keep no DeltaReorder (mobilenetv2_like 1, the
    tail's, and mobilenetv3_like 5 while the pools and the Muls read NCHW; 3 and 9 while 24-channel blocks and
    depthwise convs stayed NCHW). mobilenetv3_like's three squeeze-excite gates are one DeltaChannelGate each (the
    pool and both convs; the second and third blocks' first conv was ORT's, kept dense by the cost model), so its one
    DeltaGlobalAveragePool is the classifier's. Its first gate [1, 16, 1, 1] stays NCHW: its scale reads the gate so."""
    import zoo

    converted = deltaonnx.convert(getattr(zoo, name)((224, 224)), layout="blocked")
    layouts = {entry["source"]: entry["layout"] for entry in _metadata(converted)["nodes"]}
    for node in converted.graph.node:
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "DeltaConv" and group > 1:
            source = next(e["source"] for e in _metadata(converted)["nodes"] if e["name"] == node.name)
            assert _layout(node) == "blocked", (source, layouts[source])
    ops = [n.op_type for n in converted.graph.node]
    assert (ops.count("DeltaReorder"), ops.count("DeltaGlobalAveragePool"), ops.count("DeltaChannelScale")) == (
        0, pools, scales)
    assert ops.count("DeltaChannelGate") == scales
    assert "GlobalAveragePool" not in ops and "Mul" not in ops and "Conv" not in ops
    if name == "mobilenetv3_like":  # the first block's gate: a 1x1 output only the scale reads, as NCHW
        assert layouts["/1/body/body.2/expand/Conv"] == "nchw (one-pixel output read as NCHW)"


def squeeze_excite_model(rng, channels=24, hw=16) -> onnx.ModelProto:
    """x[1,3] -> stem(C) -> a(C) -> a squeeze-excite block (GlobalAveragePool, 1x1 C -> 8 Relu, 1x1 8 -> C
    HardSigmoid, Mul) -> c(32), and `a` also read by a Mul with a per-channel constant that is a model output."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, channels), ("a", "s", "a", channels, channels)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes.append(helper.make_node("GlobalAveragePool", ["a"], ["pooled"]))
    node, w = _conv(rng, "reduce", "pooled", "r", channels, 8, k=1)
    nodes += [node, helper.make_node("Relu", ["r"], ["r_act"])]
    inits += w
    node, w = _conv(rng, "expand", "r_act", "e", 8, channels, k=1)
    nodes += [node, helper.make_node("HardSigmoid", ["e"], ["gate"]), helper.make_node("Mul", ["a", "gate"], ["se"])]
    inits += w
    node, w = _conv(rng, "c", "se", "out", channels, 32, k=1)
    nodes.append(node)
    inits += w
    inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, channels, 1, 1)).astype(np.float32), "per_channel"))
    nodes.append(helper.make_node("Mul", ["a", "per_channel"], ["a_scaled"]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("out", "a_scaled")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])], outputs, inits)


@pytest.mark.parametrize("channels", [24, 32])
def test_squeeze_excite_block_reads_the_region_as_it_lies(rng, channels):
    """The pool and the gate's Mul of a region tensor become DeltaGlobalAveragePool and DeltaChannelScale
    (graph_passes/blocked_squeeze_excite.py), padded channels too: no DeltaReorder around the block; the gate stays
    NCHW; the Mul by a constant whose output only leaves the region stays a Mul of the NCHW copy. Exact against
    dense ORT frame after frame (partial changes, a repeat, a large change), the dense twin too."""
    import conversion
    import onnxruntime as ort

    from deltaonnx import DeltaSession
    from deltaonnx.graph_passes.dense_twin import dense_twin

    original = squeeze_excite_model(rng, channels)
    converted = deltaonnx.convert(original, layout="blocked", all_nodes=True)
    by_type = {}
    for node in converted.graph.node:
        by_type.setdefault(node.op_type, []).append(node)
    gate, scale = by_type["DeltaChannelGate"], by_type["DeltaChannelScale"]
    assert len(gate) == 1 and len(scale) == 1 and "GlobalAveragePool" not in by_type
    assert "DeltaGlobalAveragePool" not in by_type and len(by_type["DeltaConv"]) == 3  # stem, a, c: the gate's fused
    a = _producer(converted, gate[0].input[0])
    assert a.op_type == "DeltaConv" and _layout(a) == "blocked" and scale[0].input[0] == a.output[0]
    attributes = {x.name: helper.get_attribute_value(x) for x in gate[0].attribute}
    assert attributes.pop("gate_activation_params") == pytest.approx([0.2, 0.5])
    assert attributes == {"layout": b"blocked", "channels": channels, "activation": b"Relu",
                          "gate_activation": b"HardSigmoid"}
    assert scale[0].input[1] == gate[0].output[0]  # the gate, NCHW: no reorder
    c = next(n for n in by_type["DeltaConv"] if n.input[0] == scale[0].output[0])
    assert _layout(c) == "blocked"
    # the constant Mul is a model output: it reads a's NCHW copy; the other reorder puts out back to NCHW
    reorders = {n.input[0]: n for n in by_type["DeltaReorder"]}
    assert set(reorders) == {a.output[0], c.output[0]}
    assert by_type["Mul"][0].input[0] == reorders[a.output[0]].output[0]
    # the scale's map is the union of a's map and the gate's per-item one (a DeltaMapUnion), read by c
    union = _producer(converted, c.input[5])
    assert union.op_type == "DeltaMapUnion" and set(union.input) == {a.output[2], gate[0].output[1]}
    assert gate[0].input[5] == a.output[2]  # the gate's own map: any marked pixel of a's
    # a threshold on one of the gate's convs keeps the pool and the convs (their comparison would be lost)
    kept = [n.op_type for n in deltaonnx.convert(original, layout="blocked", all_nodes=True,
                                                 thresholds={"expand": 0.05}).graph.node]
    assert "DeltaChannelGate" not in kept and kept.count("DeltaGlobalAveragePool") == 1 and kept.count("DeltaConv") == 5

    dense = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    twin = ort.InferenceSession(dense_twin(converted, ["out", "a_scaled"]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    session = DeltaSession(converted)
    frames = conversion.video(conversion.model_input_shape(original), 8, rng)
    for frame in frames:
        want = dense.run(None, {"x": frame})
        for got in (session.run(None, {"x": frame}), twin.run(None, {"x": frame})):
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))


def _frames(original, count, seed):
    import conversion

    rng = np.random.default_rng(seed)
    shape = conversion.model_input_shape(original)
    return [{original.graph.input[0].name: f} for f in conversion.video(shape, count, rng)]


def check_zoo_equals_dense(seed: int = 5, names=tuple(BLOCKED_ZOO)) -> None:
    """Each zoo model converted with layout "blocked" at threshold 0, run frame after frame through the op
    library, equals dense ORT on the original; and the numpy reference at the library's b agrees."""
    import conversion
    import zoo

    for name in names:
        original = getattr(zoo, name)()
        converted = deltaonnx.convert(original, layout="blocked")
        assert any(_layout(n) == "blocked" for n in converted.graph.node), name
        if name in PADDED_ZOO:  # channel counts not multiples of 16 run padded (graph_passes/pad_lanes.py)
            assert any("channels" in entry for entry in _metadata(converted)["state"]), name
        frames = _frames(original, 5, seed)
        conversion.assert_same_as_dense(original, converted, frames, deltaonnx.library_path("cpu"))
        if name in ("cnn1", "yolov8_like", "mobilenetv3_like"):  # the numpy reference too (padded, reorders of 72, 120)
            conversion.assert_same_as_dense(original, converted, frames[:3], None)


def test_zoo_models_equal_dense_ort_at_threshold_zero():
    pytest.importorskip("zoo")
    check_zoo_equals_dense()


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("4", "scalar"), ("1", "scalar")])
def test_zoo_models_equal_dense_ort_under_another_block(block, simd):
    """The same converted model under another library block (AVX2's 8; 4; 1 = NCHW, CUDA's): b is the
    library's, not the model's; padded tensors (8, 24, 40, 72, 120 channels) hold roundup(C, b) channels."""
    from conftest import check_under_simd

    pytest.importorskip("zoo")
    check_under_simd(simd, "test_blocked_layout_pass", f"check_zoo_equals_dense(seed=7, names={('cnn1', 'unet_like', 'yolov8_like', *PADDED_ZOO)!r})", channel_block=block)


def test_blocked_equals_nchw_behind_a_gate_above_zero():
    """At a gate threshold above 0 with exact inner ops, both layouts decide the same and give the same outputs."""
    import zoo
    from deltaonnx import DeltaSession

    original = zoo.yolov8_like()
    sessions = [DeltaSession(deltaonnx.convert(original, threshold=0.3, layout=layout)) for layout in LAYOUTS]
    for feeds in _frames(original, 6, 3):
        nchw, blocked = (session.run(None, feeds) for session in sessions)
        for a, b in zip(nchw, blocked):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))


@pytest.mark.parametrize("name", ["cnn1", "mobilenetv2_like"])
def test_saved_state_carries_the_block_and_another_block_restarts(name):
    """load_state under the saved b resumes; under another b every blocked op starts empty (a full, exact
    recompute), padded ones (mobilenetv2_like's 24-channel convs, state of roundup(C, b) channels) too."""
    import zoo
    from deltaonnx import DeltaSession
    from deltaonnx.graph_passes.protocol import CHANNEL_BLOCK_KEY
    from deltaonnx.reference import library_channel_block

    original = getattr(zoo, name)()
    converted = deltaonnx.convert(original, layout="blocked")
    stateless = ("DeltaGlobalAveragePool", "DeltaChannelScale", "DeltaChannelGate")  # blocked, but no state
    blocked_nodes = {n.name for n in converted.graph.node if _layout(n).startswith("blocked") and n.op_type not in stateless}
    padded = {e["node"] for e in _metadata(converted)["state"] if "channels" in e}
    reorders = {n.name for n in converted.graph.node if n.op_type == "DeltaReorder"}
    assert bool(padded) == (name == "mobilenetv2_like") and padded <= blocked_nodes | reorders
    frames = _frames(original, 4, 11)
    session = DeltaSession(converted)
    for feeds in frames[:2]:
        session.run(None, feeds)
    saved = {name: value.numpy().copy() for name, value in session.state().items()}
    assert int(saved[CHANNEL_BLOCK_KEY]) == library_channel_block()
    expected = session.run(None, frames[2])
    for block, restarts in [(saved[CHANNEL_BLOCK_KEY], False), (np.array(library_channel_block() * 2), True)]:
        resumed = DeltaSession(converted)
        resumed.load_state({**saved, CHANNEL_BLOCK_KEY: block})
        for a, b in zip(resumed.run(None, frames[2]), expected):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        maps = resumed.change_maps()
        assert all(maps[n].all() for n in blocked_nodes) == restarts, block


def test_conversion_is_deterministic(rng):
    """The same model converts to the same bytes (state names such as DeltaReorder_<i> included), so a state saved
    from one conversion loads into another."""
    import zoo

    first, second = (deltaonnx.convert(zoo.yolov8_like(), threshold=0.05) for _ in range(2))
    assert first.SerializeToString() == second.SerializeToString()
