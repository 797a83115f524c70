"""libdeltaonnx_ops_cuda on a real GPU, through ORT's CUDAExecutionProvider (onnxruntime-gpu).

Skipped without a CUDA GPU or without onnxruntime-gpu. docs/cuda.md says how to run it on a GPU machine:
    pip install onnxruntime-gpu && python -m pytest tests/gpu -m gpu -v

The library is built from this tree when nvcc is present (tests/helpers/cuda_build.py), else the installed one is used.
Every session forbids CPU fallback, so each Delta node provably runs on the CUDA provider.

DELTAONNX_GPU_TESTS_ON_EMULATION=1 runs the same tests on a machine without a GPU against the host-emulated
build of the same library on ORT's CPU provider: that checks the tests themselves, not the GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cuda_build
from builders import DOMAIN, EMPTY, assert_in_place_equals_copying, run_copying
from concurrency import run_in_threads
from deltaonnx import reference as ref

pytestmark = pytest.mark.gpu

ON_EMULATION = os.environ.get("DELTAONNX_GPU_TESTS_ON_EMULATION") == "1"


@dataclass
class Target:
    library: str
    providers: list          # for Delta sessions
    dense_providers: list    # for the dense ORT oracle (same provider as the Delta ops)
    device: str              # "cuda" or "cpu", for OrtValues bound in place


def _cuda_usable() -> str | None:
    """None when ORT can run a CUDA session here, else why not."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime without CUDAExecutionProvider (install onnxruntime-gpu)"
    probe = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])], "probe", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])]), opset_imports=[helper.make_opsetid("", 17)])
    probe.ir_version = 10
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CUDAExecutionProvider"])
    except Exception as error:  # no driver, no device
        return f"CUDAExecutionProvider cannot start: {error}"
    if "CUDAExecutionProvider" not in session.get_providers():
        return "CUDAExecutionProvider fell back to the CPU (no GPU visible)"
    return None


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Target:
    if ON_EMULATION:
        built = cuda_build.build(tmp_path_factory.mktemp("emulated"), with_cuda=False)
        cpu = ["CPUExecutionProvider"]
        return Target(str(built.emulated_library), cpu, cpu, "cpu")
    reason = _cuda_usable()
    if reason:
        pytest.skip(reason)
    if cuda_build.find_nvcc():
        library = str(cuda_build.build(tmp_path_factory.mktemp("cuda")).cuda_library)
    else:
        import deltaonnx

        try:
            library = deltaonnx.library_path("cuda")
        except FileNotFoundError as error:
            pytest.skip(f"no nvcc to build the CUDA op library and none installed: {error}")
    # TF32 off: ORT's dense Conv must be an fp32 oracle, as the Delta ops are fp32.
    cuda = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    return Target(library, cuda, cuda, "cuda")


def delta_session(target: Target, model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.register_custom_ops_library(target.library)
    if not ON_EMULATION:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=target.providers)


def opset_model(graph) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    return model


def conv_model(attrs: dict, w: np.ndarray, b: np.ndarray | None) -> onnx.ModelProto:
    node = helper.make_node("DeltaConv", ["X", "W", "B" if b is not None else "", "X_ref", "Y_prev"],
                            ["Y", "X_ref_next", "map_out"], domain=DOMAIN, name="delta_conv_0", **attrs)
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    return opset_model(helper.make_graph(
        [node], "delta_conv", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "X_ref", "Y_prev")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("X_ref_next", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("map_out", TensorProto.UINT8, None)], initializer=inits))


def dense_conv_model(attrs: dict, w: np.ndarray, b: np.ndarray | None, activation: str) -> onnx.ModelProto:
    conv_attrs = {k: v for k, v in attrs.items() if k in ("strides", "pads", "dilations", "group", "auto_pad")}
    nodes = [helper.make_node("Conv", ["X", "W"] + (["B"] if b is not None else []), ["C"], **conv_attrs)]
    if activation == "Relu":
        nodes.append(helper.make_node("Relu", ["C"], ["Y"]))
    elif activation == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["C"], ["Y"], alpha=float(attrs["activation_params"][0])))
    elif activation == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["C"], ["Y"]))
    else:
        nodes.append(helper.make_node("Identity", ["C"], ["Y"]))
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    model = helper.make_model(helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def frames(rng, shape, count, *, noise=0.05):
    """Static scene with sub-threshold noise, a moving patch, and isolated large changes."""
    x = rng.standard_normal(shape).astype(np.float32)
    out = [x]
    n, c, h, w = shape
    for t in range(1, count):
        x = x.copy()
        if t % 3 == 1:
            x += np.where(rng.random((n, 1, h, w)) < 0.3, rng.uniform(-noise, noise, shape), 0).astype(np.float32)
        y0, x0 = (3 * t) % max(1, h - 4), (5 * t) % max(1, w - 4)
        x[:, :, y0:y0 + 4, x0:x0 + 4] = rng.standard_normal((n, c, min(4, h - y0), min(4, w - x0)))
        x[int(rng.integers(0, n)), int(rng.integers(0, c)), int(rng.integers(0, h)), int(rng.integers(0, w))] += 3.0
        out.append(x)
    return out


CONV_CASES = [
    dict(c=16, m=32, kernel=(3, 3), attrs=dict(pads=[1, 1, 1, 1], activation="Relu")),
    dict(c=8, m=12, kernel=(3, 3), group=4, attrs=dict(strides=[2, 2], pads=[1, 0, 0, 1], activation="LeakyRelu",
                                                        activation_params=[0.1])),
    dict(c=6, m=6, kernel=(5, 3), attrs=dict(dilations=[2, 1], pads=[4, 1, 4, 1], activation="Sigmoid")),
    dict(c=12, m=12, kernel=(3, 3), group=12, attrs=dict(auto_pad="SAME_UPPER", strides=[2, 1])),
    dict(c=3, m=80, kernel=(1, 1), bias=False, attrs=dict(activation="Relu", dense_fraction=0.9)),
]


def setup_case(case, rng):
    group = case.get("group", 1)
    w = rng.standard_normal((case["m"], case["c"] // group) + case["kernel"]).astype(np.float32) * 0.3
    b = rng.standard_normal(case["m"]).astype(np.float32) if case.get("bias", True) else None
    return w, b, dict(case["attrs"], group=group)


@pytest.mark.parametrize("case_index", range(len(CONV_CASES)))
def test_tau0_equals_dense_ort_conv_on_every_frame(target, case_index):
    case = CONV_CASES[case_index]
    rng = np.random.default_rng(case_index)
    w, b, attrs = setup_case(case, rng)
    delta = delta_session(target, conv_model(dict(attrs, threshold=0.0), w, b))
    dense = ort.InferenceSession(dense_conv_model(attrs, w, b, attrs.get("activation", "")).SerializeToString(),
                                 providers=target.dense_providers)
    x_ref, y_prev = EMPTY, EMPTY
    fractions = []
    for t, x in enumerate(frames(rng, (2, case["c"], 24, 20), 8)):
        y, x_ref, map_out = delta.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        np.testing.assert_allclose(y, dense.run(None, {"X": x})[0], rtol=1e-4, atol=1e-4, err_msg=f"frame {t}")
        np.testing.assert_array_equal(x_ref, x)
        fractions.append(float(map_out.mean()))
        y_prev = y
    assert fractions[0] == 1.0 and min(fractions[1:]) < 1.0


@pytest.mark.parametrize("tau", [0.02, 0.3])
def test_invariants_with_a_threshold(target, tau):
    # docs/design.md rule 5: Y == act(conv(X_ref_next) + B) everywhere, max_c |X - X_ref_next| <= tau, and map_out
    # marks at least every pixel whose Y changed.
    rng = np.random.default_rng(17)
    w = rng.standard_normal((10, 4, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(10).astype(np.float32)
    attrs = dict(pads=[1, 1, 1, 1], activation="Relu", threshold=tau)
    delta = delta_session(target, conv_model(attrs, w, b))
    x_ref, y_prev = EMPTY, EMPTY
    for x in frames(rng, (2, 4, 20, 18), 8, noise=2 * tau):
        y, x_ref, map_out = delta.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        want = ref.activation(ref.conv2d(x_ref, w, b, pads=[1, 1, 1, 1]), "Relu")
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
        assert np.max(np.abs(x - x_ref)) <= tau
        if y_prev.size:
            changed = (y != y_prev).any(axis=1, keepdims=True)
            assert not (changed & (map_out == 0)).any()
        y_prev = y


@pytest.mark.parametrize("activation", ["", "Relu"])
def test_device_gemm_equals_host_emulation_bit_for_bit(target, activation):
    # The device accumulates with fmaf in the order of conv_accumulate(); for activations without
    # transcendental functions or contractible arithmetic the GPU's Y equals the host emulation's exactly.
    try:
        from deltaonnx import _native
        host = _native.cuda_host
    except (ImportError, AttributeError):
        pytest.skip("deltaonnx._native.cuda_host is not built")
    rng = np.random.default_rng(3)
    for group, c, m in ((1, 7, 33), (3, 6, 9)):
        w = rng.standard_normal((m, c // group, 3, 3)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        attrs = dict(pads=[1, 2, 0, 1], strides=[1, 2], group=group, activation=activation)
        delta = delta_session(target, conv_model(attrs, w, b))
        x = rng.standard_normal((2, c, 13, 17)).astype(np.float32)
        y, _, _ = delta.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})
        want = host.conv_direct(x, w, b, strides=[1, 2], pads=[1, 2, 0, 1], group=group, activation=activation)
        np.testing.assert_array_equal(y, want)


def test_delta_pool_tau0_equals_dense_ort_maxpool(target):
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    node = helper.make_node("DeltaPool", ["X", "X_ref", "Y_prev"], ["Y", "X_ref_next", "map_out"], domain=DOMAIN,
                            name="delta_pool_0", **attrs)
    model = opset_model(helper.make_graph(
        [node], "p", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "X_ref", "Y_prev")],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("X_ref_next", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("map_out", TensorProto.UINT8, None)]))
    dense_model = helper.make_model(helper.make_graph(
        [helper.make_node("MaxPool", ["X"], ["Y"], **attrs)], "d",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    dense_model.ir_version = 10
    delta = delta_session(target, model)
    dense = ort.InferenceSession(dense_model.SerializeToString(), providers=target.dense_providers)
    rng = np.random.default_rng(8)
    x_ref, y_prev = EMPTY, EMPTY
    for x in frames(rng, (2, 5, 23, 19), 7):
        y, x_ref, map_out = delta.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        np.testing.assert_array_equal(y, dense.run(None, {"X": x})[0])
        y_prev = y


def test_map_union(target):
    names = [f"m{i}" for i in range(10)]
    model = opset_model(helper.make_graph(
        [helper.make_node("DeltaMapUnion", names, ["U"], domain=DOMAIN, name="union_0")], "u",
        [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in names],
        [helper.make_tensor_value_info("U", TensorProto.UINT8, None)]))
    rng = np.random.default_rng(2)
    maps = {n: (rng.random((2, 1, 30, 40)) < 0.02).astype(np.uint8) for n in names}
    np.testing.assert_array_equal(delta_session(target, model).run(None, maps)[0], ref.map_union(*maps.values()))


def test_batch_items_are_independent_streams(target):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    delta = delta_session(target, conv_model(dict(pads=[1, 1, 1, 1]), w, None))
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    y, x_ref, _ = delta.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})
    x2 = x.copy()
    x2[1, :, 5, 7] += 1.0  # only stream 1 changes
    y2, _, map_out = delta.run(None, {"X": x2, "X_ref": x_ref, "Y_prev": y})
    assert map_out[0].sum() == 0 and map_out[2].sum() == 0 and map_out[1].sum() == 9
    np.testing.assert_array_equal(y2[[0, 2]], y[[0, 2]])
    np.testing.assert_allclose(y2[1], ref.conv2d(x2[1:2], w, pads=[1, 1, 1, 1])[0], rtol=1e-4, atol=1e-4)


def test_in_place_state_on_the_device(target):
    # State bound in place as device OrtValues (docs/state_protocol.md): the op writes only what it recomputes,
    # and the results equal the copying run's.
    rng = np.random.default_rng(6)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    delta = delta_session(target, conv_model(dict(pads=[1, 1, 1, 1], threshold=0.01), w, None))
    seq = frames(rng, (1, 8, 20, 20), 6)
    assert_in_place_equals_copying(delta, seq, (1, 16, 20, 20), (1, 8, 20, 20), target.device, 0)


def test_concurrent_sessions_each_on_their_own_stream(target):
    # Two sessions run sequences at once from two threads; each kernel runs on its session's compute stream,
    # so the results equal the sequential ones exactly.
    rng = np.random.default_rng(12)
    w = rng.standard_normal((24, 8, 3, 3)).astype(np.float32)
    model = conv_model(dict(pads=[1, 1, 1, 1], activation="Relu", threshold=0.0), w, None)
    seqs = [frames(np.random.default_rng(s), (2, 8, 40, 36), 10) for s in (1, 2)]
    sequential = [run_copying(delta_session(target, model), seq) for seq in seqs]
    sessions = [delta_session(target, model) for _ in seqs]
    results = [None, None]

    def worker(i):
        results[i] = run_copying(sessions[i], seqs[i])

    run_in_threads(worker, range(2))
    for i in range(2):
        for (y, xr, mo), (wy, wxr, wmo) in zip(results[i], sequential[i]):
            np.testing.assert_array_equal(y, wy)
            np.testing.assert_array_equal(xr, wxr)
            np.testing.assert_array_equal(mo, wmo)


def test_errors_name_the_node(target):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    delta = delta_session(target, conv_model(dict(pads=[1, 1, 1, 1]), w, None))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(Exception, match="DeltaConv node 'delta_conv_0'.*Y_prev"):
        delta.run(None, {"X": x, "X_ref": x, "Y_prev": np.zeros((1, 4, 7, 8), np.float32)})
    with pytest.raises(Exception, match="DeltaConv node 'delta_conv_0'.*strides"):
        delta_session(target, conv_model(dict(strides=[0, 1]), w, None))
