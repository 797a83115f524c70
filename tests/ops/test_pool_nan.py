"""NaN and infinities in DeltaPool (issue 17, finding 7; docs/ops.md "NaN and infinities").

DeltaPool's MaxPool gives NaN wherever its window reads a NaN, on the CPU (every SIMD variant), in the CUDA
kernels' per-thread body and in the numpy reference. ORT 1.32's CPU MaxPool has no one rule: whether a NaN
survives depends on where it sits in the window and on the kernel ORT picks (MLAS's generic pooling at
ORT_DISABLE_ALL, its NCHWc pooling at ORT_ENABLE_ALL with 8+ channels); it gives NaN for some positions and,
for the others, the max of some of the window's other values. So DeltaPool agrees with ORT where ORT is defined:
every output whose window holds no NaN is ORT's bit for bit, and every NaN ORT outputs, DeltaPool outputs too.
Rule 2 is unchanged: a NaN pixel is always a change."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from builders import DOMAIN, EMPTY, op_model, op_session
from deltaonnx import reference

LOWEST = np.finfo(np.float32).min
WINDOWS = {  # name: MaxPool attributes
    "2x2 s2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x3 s1 pad 1": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "3x3 s1 pad 1 dilation 2": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[2, 2]),
    "5x5 s1 pad 2": dict(kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]),
    "3x3 s2 ceil": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
}


def ort_maxpool(attrs, level):
    model = op_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [("x", TensorProto.FLOAT)],
                     [("y", TensorProto.FLOAT)])
    return op_session(model, custom=False, level=level)


def delta_pool(attrs, with_map):
    inputs = [("x", TensorProto.FLOAT), ("x_ref", TensorProto.FLOAT), ("y_prev", TensorProto.FLOAT)]
    if with_map:
        inputs.append(("map_in", TensorProto.UINT8))
    node = helper.make_node("DeltaPool", [n for n, _ in inputs], ["y", "x_ref_next", "map_out"], domain=DOMAIN,
                            name="pool", **attrs)
    model = op_model([node], inputs, [("y", TensorProto.FLOAT), ("x_ref_next", TensorProto.FLOAT),
                                      ("map_out", TensorProto.UINT8)])
    return op_session(model)


def nan_windows(x, attrs):
    """bool [N,C,Ho,Wo]: the outputs whose window reads a NaN (the OR-pool of isnan, per channel)."""
    pooled = reference.maxpool2d(np.where(np.isnan(x), 1.0, 0.0).astype(np.float32), **attrs)
    return pooled > 0


@pytest.mark.sanitizer
@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL], ids=["generic", "nchwc"])
@pytest.mark.parametrize("channels", [1, 16])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_nan_gives_nan_in_its_windows_and_ort_elsewhere(window, channels, level):
    """A NaN swept over every position of a channel, on the first frame (every output computed) and as the
    change of a second frame (only its windows recomputed, with and without a change map)."""
    attrs = WINDOWS[window]
    rng = np.random.default_rng(7)
    dense = ort_maxpool(attrs, level)
    base = rng.standard_normal((1, channels, 7, 8)).astype(np.float32)
    sessions = {with_map: delta_pool(attrs, with_map) for with_map in (False, True)}
    y0, x_ref0, _ = sessions[False].run(None, {"x": base, "x_ref": EMPTY, "y_prev": EMPTY})
    ort_nans = 0
    for c in sorted({0, channels - 1}):
        for i in range(base.shape[2]):
            for j in range(base.shape[3]):
                x = base.copy()
                x[0, c, i, j] = np.nan
                want = dense.run(None, {"x": x})[0]
                inside = nan_windows(x, attrs)
                changed = np.zeros((1, 1) + x.shape[2:], np.uint8)
                changed[0, 0, i, j] = 1
                runs = {"first frame": sessions[False].run(None, {"x": x, "x_ref": EMPTY, "y_prev": EMPTY}),
                        "delta": sessions[False].run(None, {"x": x, "x_ref": x_ref0, "y_prev": y0}),
                        "delta with map": sessions[True].run(None, {"x": x, "x_ref": x_ref0, "y_prev": y0,
                                                                     "map_in": changed})}
                for how, (y, x_ref_next, map_out) in runs.items():
                    where = f"{window}, NaN at channel {c} ({i}, {j}), {how}"
                    assert np.array_equal(np.isnan(y), inside), where  # NaN exactly in the NaN's windows
                    np.testing.assert_array_equal(y[~inside], want[~inside], err_msg=where)  # ORT elsewhere
                    assert np.isnan(y[np.isnan(want)]).all(), where  # every NaN of ORT's
                    assert np.isnan(x_ref_next[0, c, i, j]), where  # rule 3: the NaN became the reference
                    if how != "first frame":
                        assert map_out[0, 0][inside[0].any(axis=0)].all(), where  # rule 2: a NaN is a change
                ort_nans += int(np.isnan(want).any())
    assert ort_nans > 0  # ORT keeps some NaNs here: the subset check above checked something


@pytest.mark.sanitizer
def test_infinities_and_padding_agree_across_engines():
    """+inf wins, a window of -inf (or wholly in the padding) gives the lowest float, NaN beats +inf: the same
    on every SIMD variant, in the reference and in the CUDA kernels' body (through the host emulation)."""
    from deltaonnx import _native

    x = np.zeros((1, 2, 4, 6), np.float32)
    x[0, :, :2, :2] = -np.inf  # window (0, 0): all -inf
    x[0, :, :2, 2:4] = [[-np.inf, 3.0], [np.inf, -np.inf]]  # window (0, 1): +inf
    x[0, :, :2, 4:6] = [[np.inf, np.nan], [-np.inf, 1.0]]  # window (0, 2): NaN beats +inf
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 2, 0])  # row 2 of outputs: wholly padding
    want = np.full((1, 2, 3, 3), np.nan, np.float32)
    want[..., 0, :] = [LOWEST, np.inf, np.nan]
    want[..., 1, :] = 0.0
    want[..., 2, :] = LOWEST
    np.testing.assert_array_equal(reference.maxpool2d(x, **attrs), want)
    for simd in _native.simd_variants():
        y = _native.delta_pool(x, EMPTY, EMPTY, simd=simd, **attrs)[0]
        np.testing.assert_array_equal(y, want, err_msg=simd)
    y = delta_pool(attrs, with_map=False).run(None, {"x": x, "x_ref": EMPTY, "y_prev": EMPTY})[0]
    np.testing.assert_array_equal(y, want)
    if not hasattr(_native, "cuda_host"):
        pytest.skip("deltaonnx._native was built without the CUDA host bindings")
    pixels = np.zeros((1, 9), np.int32)
    got = _native.cuda_host.max_pool(x, pixels, np.zeros(1, np.int32), np.zeros_like(want), all_dense=True, **attrs)
    np.testing.assert_array_equal(got, want)
