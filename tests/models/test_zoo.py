"""models/zoo.py and models/synthetic_video.py: the sample models carry the patterns the converter must
handle, export deterministically, and run in ORT; the synthetic frames do what their kind says."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import synthetic_video

pytest.importorskip("torch")
import zoo  # noqa: E402

EXPECTED_OUTPUTS = {  # builder -> {output name: shape} with default arguments
    "resnet18_like": {"logits": (1, 10)},
    "mobilenetv2_like": {"logits": (1, 10)},
    "mobilenetv3_like": {"logits": (1, 10)},
    "yolov8_like": {"output0": (1, 6, 8 * 8 + 4 * 4 + 2 * 2)},
    "unet_like": {"mask_logits": (1, 2, 64, 64)},
    "cnn1": {"logits": (1, 10)},
    "nhwc_input": {"prob": (1, 2, 19, 27), "box": (1, 4, 19, 27)},
}


def ops_of(model):
    return [node.op_type for node in model.graph.node]


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def initializer(model, name):
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in model.graph.node:  # Constant nodes
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(attr(node, "value"))
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(zoo.BUILDERS))
def test_model_is_valid_deterministic_and_runs(name):
    model = zoo.BUILDERS[name]()
    assert model.ir_version == 10
    assert {o.domain: o.version for o in model.opset_import}[""] == 17
    onnx.checker.check_model(model, full_check=True)
    assert zoo.BUILDERS[name]().SerializeToString() == model.SerializeToString()
    model.graph.node.pop()  # callers get a fresh copy each time
    model = zoo.BUILDERS[name]()
    assert "Identity" not in ops_of(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    x = np.random.default_rng(0).random(inp.shape, dtype=np.float32)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {inp.name: x})))
    assert {k: v.shape for k, v in outputs.items()} == EXPECTED_OUTPUTS[name]
    assert all(np.isfinite(v).all() and np.abs(v).max() > 1e-3 for v in outputs.values())


@pytest.mark.parametrize("name", ["resnet18_like", "mobilenetv2_like", "mobilenetv3_like", "yolov8_like", "unet_like"])
def test_batchnorm_nodes_have_nontrivial_statistics(name):
    model = zoo.BUILDERS[name]()
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns, "BN must stay a node so the converter's folding is exercised"
    for bn in bns:
        scale, bias, mean, var = (initializer(model, i) for i in bn.input[1:5])
        assert attr(bn, "training_mode", 0) == 0
        assert np.ptp(mean) > 0 and np.ptp(var) > 0 and np.ptp(scale) > 0 and np.all(var > 0.4)
        producer = next(n for n in model.graph.node if bn.input[0] in n.output)
        assert producer.op_type == "Conv"


def test_model_specific_patterns():
    v2 = zoo.mobilenetv2_like()
    clips = [n for n in v2.graph.node if n.op_type == "Clip"]
    assert clips and all((initializer(v2, c.input[1]), initializer(v2, c.input[2])) == (0, 6) for c in clips)
    assert any(attr(n, "group", 1) > 1 for n in v2.graph.node if n.op_type == "Conv")  # depthwise
    assert ops_of(v2).count("Add") == 3  # inverted residuals

    v3 = zoo.mobilenetv3_like()
    assert {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"} <= set(ops_of(v3))

    yolo = zoo.yolov8_like()
    sigmoid_input = {n.output[0]: n.input[0] for n in yolo.graph.node if n.op_type == "Sigmoid"}
    silu = [n for n in yolo.graph.node if n.op_type == "Mul"
            and any(sigmoid_input.get(a) == b for a, b in (n.input, n.input[::-1]))]
    assert len(silu) == len(sigmoid_input) > 40  # every SiLU exported as x * Sigmoid(x)
    pools = [n for n in yolo.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 3 and all(
        (attr(p, "kernel_shape"), attr(p, "strides"), attr(p, "pads")) == ([5, 5], [1, 1], [2, 2, 2, 2]) for p in pools)
    resizes = [n for n in yolo.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2 and all(attr(r, "mode") == b"nearest" for r in resizes)
    assert {"Split", "Concat"} <= set(ops_of(yolo))

    resnet = zoo.resnet18_like()
    assert {"MaxPool", "GlobalAveragePool", "Gemm", "Add"} <= set(ops_of(resnet))
    assert any(attr(n, "strides") == [2, 2] for n in resnet.graph.node if n.op_type == "Conv")

    unet = zoo.unet_like()
    assert ops_of(unet).count("ConvTranspose") == 2 and ops_of(unet).count("Concat") == 2

    cnn = zoo.cnn1()
    convs = [n for n in cnn.graph.node if n.op_type == "Conv"]
    assert [initializer(cnn, c.input[1]).shape for c in convs] == [(32, 1, 3, 3), (64, 32, 3, 3)]
    gemms = [n for n in cnn.graph.node if n.op_type == "Gemm"]
    assert [initializer(cnn, g.input[1]).shape for g in gemms] == [(128, 16384), (10, 128)]

    nhwc = zoo.nhwc_input()
    first = nhwc.graph.node[0]
    assert first.op_type == "Transpose" and attr(first, "perm") == [0, 3, 1, 2]
    prelus = [n for n in nhwc.graph.node if n.op_type == "PRelu"]
    assert len(prelus) == 3 and all(initializer(nhwc, p.input[1]).size > 1 for p in prelus)
    assert attr(next(n for n in nhwc.graph.node if n.op_type == "MaxPool"), "ceil_mode") == 1


def test_builder_arguments():
    model = zoo.yolov8_like(hw=(96, 64), batch=2)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 96, 64]
    with pytest.raises(ValueError, match="32"):
        zoo.yolov8_like(hw=(80, 64))


def test_script_writes_files(tmp_path):
    assert zoo.main([str(tmp_path), "--only", "cnn1", "nhwc_input"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn1.onnx", "nhwc_input.onnx"]
    assert onnx.load(tmp_path / "cnn1.onnx").ir_version == 10


# ------------------------------------------------------------------------------------------------
# synthetic video
# ------------------------------------------------------------------------------------------------

def test_synthetic_frames_do_what_their_kind_says():
    frames = synthetic_video.sequence((2, 3, 48, 64), 19, seed=5, noise=0.02)
    kinds = [f.kind for f in frames]
    assert kinds[0] == "first" and set(kinds) == {"first", "static", "blob", "noise", "global", "reset"}
    assert [f.reset for f in frames] == [k in ("first", "reset") for k in kinds]
    for previous, frame in zip(frames, frames[1:]):
        x = frame.data
        assert x.dtype == np.float32 and x.shape == (2, 3, 48, 64) and 0 <= x.min() and x.max() <= 1
        changed = np.abs(x - previous.data).max(axis=1) > 0  # [N,H,W]
        fraction = changed.mean(axis=(1, 2))
        if frame.kind == "static":
            assert np.array_equal(x, previous.data)
        elif frame.kind == "blob":
            assert np.all((fraction > 0.005) & (fraction < 0.25))
        elif frame.kind == "noise":
            assert 0 < np.abs(x - previous.data).max() <= 0.02 + 1e-6
        elif frame.kind in ("global", "reset"):
            assert np.all(fraction > 0.9)
    assert not np.array_equal(frames[0].data[0], frames[0].data[1])  # each batch item is its own stream


def test_synthetic_sequence_is_deterministic_and_supports_nhwc():
    a = synthetic_video.sequence((1, 3, 32, 40), 6, seed=1)
    b = synthetic_video.sequence((1, 3, 32, 40), 6, seed=1)
    c = synthetic_video.sequence((1, 3, 32, 40), 6, seed=2)
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a, b))
    assert not np.array_equal(a[0].data, c[0].data)
    nhwc = synthetic_video.sequence((1, 32, 40, 3), 6, seed=1, layout="NHWC")
    assert all(np.array_equal(x.data.transpose(0, 2, 3, 1), y.data) for x, y in zip(a, nhwc))
    with pytest.raises(ValueError, match="layout"):
        synthetic_video.sequence((1, 3, 8, 8), 2, layout="CHW")
