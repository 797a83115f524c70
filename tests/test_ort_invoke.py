"""The experimental Ort::Op library (benchmarks/ort_invoke): ORT's own Conv, Gemm, MatMul and NCHWc kernels invoked
from custom ops give ORT's Conv results. The library is not part of the product: the tests build it once per run
with CMake (ORT_INVOKE_LIBRARY points them at a prebuilt one instead)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from edge_build import REPO_ROOT, cmake_build, ort_include_dir

_library: Path | None = None


def library() -> Path:
    """The experimental library: ORT_INVOKE_LIBRARY, else built from benchmarks/ort_invoke into the test run's
    temporary directory (fails with the build's output when it does not build)."""
    global _library
    if _library is None:
        if os.environ.get("ORT_INVOKE_LIBRARY"):
            _library = Path(os.environ["ORT_INVOKE_LIBRARY"])
        else:
            import tempfile

            build = Path(tempfile.mkdtemp(prefix="ort_invoke_build_"))
            cmake_build(REPO_ROOT / "benchmarks" / "ort_invoke", build,
                        {"CMAKE_BUILD_TYPE": "Release", "ORT_INCLUDE_DIR": ort_include_dir()})
            found = sorted(build.rglob("libort_invoke_ops.so"))
            assert found, f"no libort_invoke_ops.so under {build}"
            _library = found[0]
    return _library


DOMAIN = "com.deltaonnx.experimental"


def _session(op, domain, w, b, conv_attrs, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, **extra):
    inputs = ["x", "w"] + (["b"] if b is not None else [])
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node(op, inputs, ["y"], domain=domain, **conv_attrs, **extra)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, None)],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level
    so.register_custom_ops_library(str(library()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# (N, C, M, H, W, conv attributes, bias)
SHAPES = {
    "3x3_pad1": (1, 8, 16, 10, 12, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), True),
    "3x3_s2_batch2": (2, 6, 5, 11, 9, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True),
    "3x3_dil2_asym": (1, 4, 7, 13, 10, dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[0, 2, 1, 0]), True),
    "5x3_s2x1_nobias": (1, 3, 4, 12, 9, dict(kernel_shape=[5, 3], strides=[2, 1], pads=[2, 1, 2, 1]), False),
    "1x1": (2, 16, 8, 6, 7, dict(kernel_shape=[1, 1]), True),
    "1x1_s2": (1, 16, 8, 7, 7, dict(kernel_shape=[1, 1], strides=[2, 2]), True),
}


def _case(name, rng, group=1):
    N, C, M, H, W, attrs, bias = SHAPES[name]
    k = attrs["kernel_shape"]
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C // group, *k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    return x, w, b, dict(attrs, group=group) if group != 1 else attrs


@pytest.mark.parametrize("name", list(SHAPES))
def test_invoked_conv_is_orts_conv(name):
    x, w, b, attrs = _case(name, np.random.default_rng(1))
    expected = _session("Conv", "", w, b, attrs).run(None, {"x": x})[0]
    got = _session("InvokedConv", DOMAIN, w, b, attrs).run(None, {"x": x})[0]
    # The same kernel (ORT's plain Conv) on the same inputs: the same bits.
    np.testing.assert_array_equal(got, expected)


def test_invoked_conv_grouped():
    rng = np.random.default_rng(2)
    x, w, b, attrs = _case("3x3_pad1", rng, group=2)
    expected = _session("Conv", "", w, b, attrs).run(None, {"x": x})[0]
    got = _session("InvokedConv", DOMAIN, w, b, attrs).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("product,panel", [("Gemm", 0), ("Gemm", 5), ("Gemm", 17), ("MatMul", 0), ("MatMul", 13)])
def test_invoked_gemm_conv_matches_conv(name, product, panel):
    x, w, b, attrs = _case(name, np.random.default_rng(3))
    expected = _session("Conv", "", w, b, attrs).run(None, {"x": x})[0]
    got = _session("InvokedGemmConv", DOMAIN, w, b, attrs, product=product, panel=panel).run(None, {"x": x})[0]
    assert got.shape == expected.shape
    # im2col + GEMM: the same products, summed in GEMM blocking order (bias added before or after).
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_invoked_gemm_conv_refuses_groups():
    x, w, b, attrs = _case("3x3_pad1", np.random.default_rng(4), group=2)
    with pytest.raises(Exception, match="group must be 1"):
        _session("InvokedGemmConv", DOMAIN, w, b, attrs)


def test_op_created_for_fewer_inputs_than_invoked_is_refused_by_ort():
    x, w, b, attrs = _case("3x3_pad1", np.random.default_rng(5))
    sess = _session("InvokeProbe", DOMAIN, w, b, attrs, mistake="two_inputs")
    with pytest.raises(Exception, match="invalid node input count: 3, expect: 2"):
        sess.run(None, {"x": x})


def test_probe_control_is_orts_conv():
    x, w, b, attrs = _case("3x3_pad1", np.random.default_rng(6))
    expected = _session("Conv", "", w, b, attrs).run(None, {"x": x})[0]
    got = _session("InvokeProbe", DOMAIN, w, b, attrs, mistake="none").run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)


# Channel counts that are multiples of both MLAS NCHWc block sizes (8 with AVX2, 16 with AVX-512).
NCHWC_SHAPES = {
    "3x3_pad1": (1, 16, 32, 10, 12, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), True),
    "3x3_s2_asym_batch2": (2, 32, 16, 11, 9, dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1]), True),
    "3x3_dil2": (1, 16, 16, 13, 10, dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]), True),
    "1x1_nobias": (1, 32, 16, 6, 7, dict(kernel_shape=[1, 1]), False),
}


x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                              reason="the op assumes MLAS's x86 NCHWc block sizes")


@x86_only
@pytest.mark.parametrize("name", list(NCHWC_SHAPES))
@pytest.mark.parametrize("band_rows", [0, 1, 4])
def test_invoked_nchwc_conv_is_orts_optimized_conv(name, band_rows):
    N, C, M, H, W, attrs, bias = NCHWC_SHAPES[name]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((M, C, *attrs["kernel_shape"])).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    expected = _session("Conv", "", w, b, attrs, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL).run(None, {"x": x})[0]
    got = _session("InvokedNchwcConv", DOMAIN, w, b, attrs, band_rows=band_rows).run(None, {"x": x})[0]
    # The kernels ORT_ENABLE_ALL runs for this Conv (NCHWc), invoked one by one: the same bits, in bands too.
    np.testing.assert_array_equal(got, expected)


@x86_only
def test_invoked_nchwc_conv_refuses_channels_off_the_block():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((16, 12, 3, 3)).astype(np.float32)
    with pytest.raises(Exception, match="not multiples of"):
        _session("InvokedNchwcConv", DOMAIN, w, None, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
