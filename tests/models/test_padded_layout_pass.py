"""convert's padded channel blocks (graph_passes/blocked_layout.py, graph_passes/pad_lanes.py,
docs/ops.md#blocked-layout): channel counts that are not multiples of 16 join the blocked regions, padded to the
library's block with zero lanes; what is chosen and why refused, the whitelist that keeps pad lanes zero, the
reorders' `channels`, the state entries, and that no padded tensor's channel dim is declared (it depends on b).
The end-to-end checks (equal to dense ORT at tau 0, every b) are in test_blocked_layout_pass.py."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deltaonnx


def _model(nodes, initializers, outputs, hw=12) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _conv(rng, name, x, y, c_in, c_out, k=3, group=1):
    w = numpy_helper.from_array((rng.standard_normal((c_out, c_in // group, k, k)) * 0.2).astype(np.float32), f"{name}.W")
    b = numpy_helper.from_array((rng.standard_normal(c_out) * 0.1).astype(np.float32), f"{name}.B")
    return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[k // 2] * 4, group=group), [w, b]


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, np.float32), name)


def padded_model(rng) -> onnx.ModelProto:
    """x[1,3] -> stem(24) -> a(24->40)+Relu -> m = a*0.5 -> b(40->24) -> c(24->16); m+1 -> e(40->16); out = c + e;
    f(40->24)+Sigmoid of m, a model output. Expected: stem blocked_out (3 channels), a, b and c blocked (padded in
    and out), m neutral (Mul by a finite scalar keeps zero), m+1 not (a scalar added: m read through a reorder), e
    blocked_out (it reads the NCHW m+1 as it is), f NCHW (Sigmoid(0) != 0)."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, 24), ("a", "s", "a_pre", 24, 40)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes += [helper.make_node("Relu", ["a_pre"], ["a"]), helper.make_node("Mul", ["a", "half"], ["m"]),
              helper.make_node("Add", ["m", "one"], ["p"])]
    inits += [_scalar("half", 0.5), _scalar("one", 1.0)]
    for args in [("b", "m", "b", 40, 24, 1), ("c", "b", "c", 24, 16), ("e", "p", "e", 40, 16, 1),
                 ("f", "m", "f_pre", 40, 24, 1)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes += [helper.make_node("Add", ["c", "e"], ["out"]), helper.make_node("Sigmoid", ["f_pre"], ["f"])]
    return _model(nodes, inits, ["out", "f"])


def _metadata(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["deltaonnx"])


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _layouts(model: onnx.ModelProto) -> dict[str, str]:
    """Source Conv name -> the layout the metadata gives its Delta op (with the reason when NCHW)."""
    return {entry["source"]: entry["layout"] for entry in _metadata(model)["nodes"] if entry["decision"] == "converted"}


def _producer(model: onnx.ModelProto, value: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if value in n.output)


def _reorders(model: onnx.ModelProto) -> dict[str, tuple]:
    """Reordered tensor -> (direction, channels or None)."""
    found = {}
    for node in model.graph.node:
        if node.op_type == "DeltaReorder":
            attrs = _attributes(node)
            found[node.input[0]] = (attrs["to"].decode(), attrs.get("channels"))
    return found


def _declared_channels(model: onnx.ModelProto) -> dict[str, object]:
    """Every declared 4-D value (value_info, graph inputs and outputs) -> its channel dim (int, str or None)."""
    found = {}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and len(dims) == 4:
            dim = dims[1]
            found[info.name] = dim.dim_value if dim.HasField("dim_value") else dim.dim_param or None
    return found


def test_padded_regions_what_is_chosen_and_why(rng):
    converted = deltaonnx.convert(padded_model(rng), layout="blocked", all_nodes=True)
    assert _layouts(converted) == {"stem": "blocked_out", "a": "blocked", "b": "blocked", "c": "blocked",
                                   "e": "blocked_out", "f": "nchw (output channels 24 padded, Sigmoid(0) != 0)"}
    delta = {entry["source"]: entry["name"] for entry in _metadata(converted)["nodes"]}
    by_name = {n.name: n for n in converted.graph.node}
    y = {source: by_name[name].output[0] for source, name in delta.items()}
    mul = next(n for n in converted.graph.node if n.op_type == "Mul")
    assert _producer(converted, by_name[delta["a"]].input[0]).name == delta["stem"]  # no reorder stem -> a
    assert mul.input[0] == y["a"] and by_name[delta["b"]].input[0] == mul.output[0]  # Mul by 0.5 in the region
    assert by_name[delta["c"]].input[0] == y["b"]  # padded 24 channels read as they are
    # m leaves once (for m+1 and f), the output leaves; a padded tensor's reorder says its logical channel count.
    assert _reorders(converted) == {mul.output[0]: ("nchw", 40), "deltaonnx.blocked.out": ("nchw", None)}
    assert by_name[delta["e"]].input[0] == "p"
    add = next(n for n in converted.graph.node if n.op_type == "Add" and "p" in n.output)
    assert add.input[0] == by_name[delta["f"]].input[0] == f"deltaonnx.nchw.{mul.output[0]}"  # one reorder, two readers


def test_no_padded_channel_dim_is_declared(rng):
    """A padded tensor holds roundup(C, b) channels, b the library's: its channel dim is the symbol
    deltaonnx_padded_<C> (value_info, state outputs), never C; the NCHW tensors keep their counts."""
    converted = deltaonnx.convert(padded_model(rng), layout="blocked", all_nodes=True)
    onnx.checker.check_model(converted)
    declared = _declared_channels(converted)
    delta = {entry["source"]: entry["name"] for entry in _metadata(converted)["nodes"]}
    by_name = {n.name: n for n in converted.graph.node}
    mul = next(n for n in converted.graph.node if n.op_type == "Mul")
    # (at threshold 0 the ops after the stem read change maps and keep no X_ref)
    padded = {by_name[delta["stem"]].output[0]: 24, by_name[delta["a"]].output[0]: 40, mul.output[0]: 40,
              by_name[delta["b"]].output[0]: 24}
    for name, channels in padded.items():
        assert declared[name] == f"deltaonnx_padded_{channels}", name
    # the NCHW side: reorders back, the stem's X_ref (NCHW memory), f's Y, the model outputs
    for name in (f"deltaonnx.present.{delta['stem']}.x_ref", "out", "f", f"deltaonnx.nchw.{mul.output[0]}"):
        assert declared[name] in (3, 16, 24, 40), (name, declared[name])
    # the padded state entries say their logical channel count, the others nothing
    state = {(e["node"], e["kind"]): e for e in _metadata(converted)["state"]}
    assert state[(delta["a"], "y")]["channels"] == 40
    assert state[(delta["b"], "y")]["channels"] == 24 and state[(delta["stem"], "y")]["channels"] == 24
    assert "channels" not in state[(delta["stem"], "x_ref")] and "channels" not in state[(delta["c"], "y")]
    assert "channels" not in state[(delta["f"], "y")]


def _region_op_model(rng, op_nodes, inits=()):
    """x -> stem(3->24, blocked_out)+Relu -> the op(s) under test (reading `s`, writing `t`; the stem's activation
    is taken, so they are not fused into it) -> k(24->16) -> out."""
    stem, w_stem = _conv(rng, "stem", "x", "s_pre", 3, 24)
    k, w_k = _conv(rng, "k", "t", "out", 24, 16)
    return _model([stem, helper.make_node("Relu", ["s_pre"], ["s"]), *op_nodes, k], [*w_stem, *w_k, *inits], ["out"])


@pytest.mark.parametrize("op, inputs, attrs, constant, keeps", [
    ("Relu", ["s"], {}, None, True),
    ("LeakyRelu", ["s"], {"alpha": 0.1}, None, True),
    ("Tanh", ["s"], {}, None, True),
    ("Sigmoid", ["s"], {}, None, False),
    ("Exp", ["s"], {}, None, False),
    ("Softplus", ["s"], {}, None, False),
    ("Clip", ["s", "lo", "hi"], {}, (0.0, 6.0), True),
    ("Clip", ["s", "lo", "hi"], {}, (1.0, 6.0), False),
    ("Mul", ["s", "k0"], {}, 0.5, True),
    ("Mul", ["s", "k0"], {}, np.inf, False),
    ("Div", ["s", "k0"], {}, 4.0, True),
    ("Div", ["s", "k0"], {}, 0.0, False),
    ("Div", ["k0", "s"], {}, 4.0, False),
    ("Div", ["s", "s"], {}, None, False),
    ("Add", ["s", "k0"], {}, 1.0, False),
    ("Sub", ["s", "k0"], {}, 0.0, False),
    ("Add", ["s", "s"], {}, None, True),
    ("Max", ["s", "k0"], {}, -1.0, True),
    ("Max", ["s", "k0"], {}, 1.0, False),
    ("Min", ["s", "k0"], {}, 1.0, True),
    ("Shrink", ["s"], {"lambd": 0.5, "bias": 0.5}, None, True),
    ("Shrink", ["s"], {"lambd": -0.5, "bias": 0.5}, None, False),
])
def test_the_whitelist_keeps_pad_lanes_zero(rng, op, inputs, attrs, constant, keeps):
    """A layout-neutral op reading a padded tensor stays in the region only when f(0) = 0 on the pad lanes;
    else it reads NCHW through a reorder (its channels said) and k reads its output as it is (blocked_out)."""
    inits = []
    if op == "Clip":
        inits = [_scalar("lo", constant[0]), _scalar("hi", constant[1])]
    elif constant is not None:
        inits = [_scalar("k0", constant)]
    converted = deltaonnx.convert(_region_op_model(rng, [helper.make_node(op, inputs, ["t"], **attrs)], inits),
                                  layout="blocked", all_nodes=True)
    assert _layouts(converted) == {"stem": "blocked_out", "k": "blocked" if keeps else "blocked_out"}
    stem = next(e["name"] for e in _metadata(converted)["nodes"] if e["source"] == "stem")
    stem_y = next(n.output[0] for n in converted.graph.node if n.name == stem)
    expected = {} if keeps else {stem_y: ("nchw", 24)}
    assert {k: v for k, v in _reorders(converted).items() if k != "deltaonnx.blocked.out"} == expected


@pytest.mark.parametrize("activation, params, blocked", [
    ("Relu", {}, True), ("LeakyRelu", {"alpha": 0.2}, True), ("Tanh", {}, True), ("HardSwish", {}, True),
    ("Sigmoid", {}, False), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, False),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.0}, True),
])
def test_a_padded_output_needs_act_of_zero_zero(rng, activation, params, blocked):
    """A DeltaConv writing padded blocked channels writes act(0 + 0) on its pad lanes: the converter asks for it
    only where that is 0 (the op refuses the others); a multiple of 16 is blocked whatever the activation."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, 16), ("a", "s", "a_pre", 16, 24), ("w", "s", "w_pre", 16, 32)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes += [helper.make_node(activation, ["a_pre"], ["a"], **params),
              helper.make_node(activation, ["w_pre"], ["wide"], **params)]
    converted = deltaonnx.convert(_model(nodes, inits, ["a", "wide"]), layout="blocked", all_nodes=True)
    layouts = _layouts(converted)
    assert layouts["w"] == "blocked"
    assert layouts["a"] == ("blocked" if blocked else f"nchw (output channels 24 padded, {activation}(0) != 0)")


@pytest.mark.parametrize("channels", [8, 12, 16, 24, 40])
def test_counts_below_16_stay_nchw(rng, channels):
    """A conv's input of fewer than 16 channels is read NCHW, as ORT's NCHWc transformer reads it (padding 8 to 16
    doubles the work), so a conv on it writes its region from NCHW ("blocked_out"); an output of fewer than 16
    stays NCHW (ORT pads it, but the reorders around measured slower: docs/results.md#padded-conversion); a depthwise
    conv or a pool of fewer than 16 channels stays NCHW; 24 or 40 are padded, 16 is whole."""
    nodes, inits = [], []
    for args in [("stem", "x", "s", 3, channels), ("a", "s", "a", channels, 16), ("h", "a", "h", 16, channels),
                 ("dw", "s", "d", channels, channels, 3, channels)]:
        node, w = _conv(rng, *args)
        nodes.append(node)
        inits += w
    nodes.append(helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    converted = deltaonnx.convert(_model(nodes, inits, ["h", "d", "p"]), layout="blocked", all_nodes=True)
    layouts = _layouts(converted)
    pool = layouts.pop(next(k for k in layouts if k not in ("stem", "a", "h", "dw")))
    if channels < 16:
        assert layouts == {"stem": "nchw (reads a model input)", "a": "blocked_out",
                           "h": f"nchw (output channels {channels} fewer than 16)",
                           "dw": f"nchw (output channels {channels} fewer than 16)"}
        assert pool == f"nchw (input channels {channels} fewer than 16)"
    else:
        assert layouts == {"stem": "blocked_out", "a": "blocked", "h": "blocked", "dw": "blocked"} and pool == "blocked"


@pytest.mark.parametrize("reader_k", [True, False])
def test_a_mixed_neutral_op_whose_output_leaves_stays_nchw(rng, reader_k):
    """t = s + g, s blocked (the stem's), g NCHW (its conv's Sigmoid keeps it out): read by a blocked conv k, the
    Add joins the region (g enters by one reorder); read only outside (a Concat of 24-channel parts), it stays NCHW: s leaves by one reorder, instead of g entering and t leaving by two."""
    stem, w_stem = _conv(rng, "stem", "x", "s_pre", 3, 24)
    g, w_g = _conv(rng, "g", "x", "g_pre", 3, 24)
    nodes = [stem, helper.make_node("Relu", ["s_pre"], ["s"]), g, helper.make_node("Sigmoid", ["g_pre"], ["g"]),
             helper.make_node("Add", ["s", "g"], ["t"])]
    inits = [*w_stem, *w_g]
    if reader_k:
        k, w_k = _conv(rng, "k", "t", "out", 24, 16)
        nodes.append(k)
        inits += w_k
    else:
        nodes.append(helper.make_node("Concat", ["t", "g"], ["out"], axis=1))
    converted = deltaonnx.convert(_model(nodes, inits, ["out"]), layout="blocked", all_nodes=True)
    delta = {e["source"]: e["name"] for e in _metadata(converted)["nodes"]}
    y = {n.name: n.output[0] for n in converted.graph.node}
    reorders = {k: v for k, v in _reorders(converted).items() if k != "deltaonnx.blocked.out"}
    assert reorders == ({y[delta["g"]]: ("blocked", 24)} if reader_k else {y[delta["stem"]]: ("nchw", 24)})
