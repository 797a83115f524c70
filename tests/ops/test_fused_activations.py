"""HardSigmoid and HardSwish as ORT computes them, bitwise: alpha * x rounded, then + beta (never one FMA). MLAS's
NCHWc Conv applies them inside the Conv that DeltaConv invokes for items recomputed whole (nchwc_dense_conv.cc), our
kernels everywhere else (partial recomputes, every SIMD variant), so both must write what dense ORT writes."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import DeltaSession

_native = pytest.importorskip("deltaonnx._native")

C = 16
ALPHA, BETA = np.float32(1 / 6), np.float32(0.5)


def _values(count: int) -> np.ndarray:
    """Values where a contracted multiply-add rounds differently (11% of them), the clip's edges, and specials."""
    rng = np.random.default_rng(3)
    edges = np.array([-3, 3, -3.0000002, 2.9999998, 3.0000002, -2.9999998, 0.0, -0.0, 1e-30, 1e30, -1e30],
                     np.float32)
    spread = np.concatenate([rng.standard_normal(count).astype(np.float32) * 4, edges])
    return np.resize(spread, (len(spread) + C - 1) // C * C)


def _hard_sigmoid(x, alpha=ALPHA, beta=BETA):
    return np.clip(alpha * x + beta, np.float32(0), np.float32(1))  # numpy rounds the product alone


def _identity_chain_model(H: int, W: int):
    """x -> Conv 1x1 (identity, 16 channels) + HardSwish -> Conv 1x1 (identity) + HardSigmoid(0.2, 0.5) -> y. With
    identity weights every sum is exact (x + zeros), so what differs is the activations' rounding alone."""
    eye = numpy_helper.from_array(np.eye(C, dtype=np.float32).reshape(C, C, 1, 1), "eye")
    zeros = numpy_helper.from_array(np.zeros(C, np.float32), "zeros")
    nodes = [helper.make_node("Conv", ["x", "eye", "zeros"], ["c0"], name="conv0"),
             helper.make_node("HardSwish", ["c0"], ["a0"]),
             helper.make_node("Conv", ["a0", "eye", "zeros"], ["c1"], name="conv1"),
             helper.make_node("HardSigmoid", ["c1"], ["y"], alpha=0.2, beta=0.5)]
    graph = helper.make_graph(nodes, "identity_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, H, W])], [eye, zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")  # HardSwish(-inf) = -inf * 0, NaN as in ORT
@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_our_kernels_round_like_ort(simd):
    if simd not in _native.simd_variants():
        pytest.skip(f"{simd} not built or not supported here")
    x = _values(50000).reshape(1, 1, 1, -1)
    x = np.concatenate([x, np.array([np.nan, np.inf, -np.inf], np.float32).reshape(1, 1, 1, 3)], axis=3)
    empty = np.zeros((0, 1, 1, x.shape[3]), np.float32)
    one, zero = np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)
    for activation, params, want in (
            ("HardSigmoid", [0.2, 0.5], _hard_sigmoid(x, np.float32(0.2))),
            ("HardSigmoid", [float(ALPHA), 0.5], _hard_sigmoid(x)),
            ("HardSwish", [], x * _hard_sigmoid(x))):
        got = _native.delta_conv(x, one, zero, empty, empty, activation=activation, activation_params=params,
                                 simd=simd)[0]
        np.testing.assert_array_equal(got, want, err_msg=f"{simd} {activation} {params}")


def test_the_standalone_ort_ops_round_like_the_formula():
    """The formula the tests hold our kernels to is ORT's own (its HardSigmoid and HardSwish ops)."""
    x = _values(50000).reshape(1, C, 1, -1)
    for node, want in ((helper.make_node("HardSigmoid", ["x"], ["y"], alpha=float(ALPHA), beta=0.5), _hard_sigmoid(x)),
                       (helper.make_node("HardSwish", ["x"], ["y"]), x * _hard_sigmoid(x))):
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 10
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want, err_msg=node.op_type)


@pytest.mark.parametrize("engine", ["auto", "own"])
def test_delta_conv_writes_dense_orts_activations(cpu_op_library, monkeypatch, engine):
    """A first run (every item whole: ORT's NCHWc Conv with the activation inside it, or with DELTAONNX_DENSE_ENGINE=own
    our kernels) and a partial recompute both give dense ORT's values exactly."""
    monkeypatch.setenv("DELTAONNX_DENSE_ENGINE", engine)
    H, W = 40, 80
    model = _identity_chain_model(H, W)
    x = _values(C * H * W - 11)[: C * H * W].reshape(1, C, H, W)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    converted = deltaonnx.convert(model, threshold=0.0)
    assert [n.op_type for n in converted.graph.node].count("DeltaConv") == 2
    session = DeltaSession(converted, dense_fallback=False)
    want = x * _hard_sigmoid(x)
    want = _hard_sigmoid(want, np.float32(0.2))
    np.testing.assert_array_equal(dense.run(None, {"x": x})[0], want)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], want, err_msg="whole items")
    moved = x.copy()
    moved[:, :, 10:14, 20:30] = -moved[:, :, 10:14, 20:30]  # a small region: recomputed by our kernels
    want = _hard_sigmoid(moved * _hard_sigmoid(moved), np.float32(0.2))
    np.testing.assert_array_equal(session.run(None, {"x": moved})[0], want, err_msg="partial recompute")
    assert session.stats()["flops_saved_avg"] > 0.2  # the second run was partial
