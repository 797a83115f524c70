"""DeltaPool's fast paths (ops/delta_pool/cpu/pool_engine.cc over the kernel table's max_taps) against ORT's own
MaxPool at tau = 0, on the shapes that pick each path: whole planes pooled separably (rows as one flat range,
output rows as one flat range), partial updates separable or direct, many short runs, stride-2 windows whose
columns pair up, other strides (gathers), dilations, kernels of more taps than the kernels sort out at once,
rows wider than a panel, single rows and columns, several channel chunks, batches. NaN keeps its contract
(pool_engine.h: NaN in a window gives NaN), checked against the numpy reference since ORT's MaxPool drops
NaN depending on where it sits. Every SIMD variant runs the fixed cases in a fresh process (the variant is
chosen when the library loads)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import check_under_simd
from onnx import TensorProto, helper

from deltaonnx import reference
from builders import DOMAIN, EMPTY, exact_change_map, op_model, op_session, value_info

KINDS = ["first", "local", "none", "local", "global", "local", "scatter", "local", "scatter"]

# (name, MaxPool attributes, X shape)
CASES = [
    ("sppf 5x5 s1 p2, several channel chunks", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 40, 15, 20)),
    ("pnet 2x2 s2 ceil, odd sizes", dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), (1, 5, 23, 31)),
    ("3x3 s2 p1: column pairs and singles", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (2, 8, 33, 40)),
    ("3x3 s1 dilation 2", dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]), (1, 6, 20, 21)),
    ("2x2 s2 dilation 2 (no pairs)", dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
     (1, 3, 17, 22)),
    ("7x7 s1 p3: more taps than one sort-out", dict(kernel_shape=[7, 7], pads=[3, 3, 3, 3]), (1, 4, 24, 24)),
    ("13x13 s1 p6 (SPP)", dict(kernel_shape=[13, 13], pads=[6, 6, 6, 6]), (1, 3, 16, 18)),
    ("3x3 s3 p1 ceil: gathers", dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
     (1, 4, 20, 25)),
    ("4x3 s(1,2) asymmetric pads", dict(kernel_shape=[4, 3], strides=[1, 2], pads=[1, 0, 2, 1]), (1, 5, 19, 26)),
    ("rows wider than a panel", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (1, 2, 6, 300)),
    ("one input row", dict(kernel_shape=[1, 5], pads=[0, 2, 0, 2]), (1, 3, 1, 37)),
    ("one input column", dict(kernel_shape=[5, 1], pads=[2, 0, 2, 0]), (1, 3, 37, 1)),
    ("valid 5x5 (output narrower than input)", dict(kernel_shape=[5, 5]), (1, 6, 21, 23)),
]


def _pair(attrs, with_map):
    dense = op_session(op_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [value_info("x")], [value_info("y")]),
                     custom=False)
    ins = ["x", "x_ref", "y_prev"] + (["map_in"] if with_map else [])
    node = helper.make_node("DeltaPool", ins, ["y", "x_ref_next", "map"], domain=DOMAIN, name="dp", **attrs)
    vis = [value_info("x"), value_info("x_ref"), value_info("y_prev")] + ([value_info("map_in", TensorProto.UINT8)] if with_map else [])
    delta = op_session(op_model([node], vis, [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]))
    return dense, delta


def _frames(rng, shape):
    """A first frame, then steps of change: local (a block in one batch item), none, global (everything),
    scatter (a few dozen single pixels: many short runs)."""
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [x]
    for kind in KINDS[1:]:
        x = x.copy()
        if kind == "local":
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            x[rng.integers(0, n), :, y0:y0 + max(1, h // 4), x0:x0 + max(1, w // 5)] += 1.0
        elif kind == "global":
            x = rng.standard_normal(shape).astype(np.float32)
        elif kind == "scatter":
            count = max(1, h * w // 25)
            x[rng.integers(0, n, count), :, rng.integers(0, h, count), rng.integers(0, w, count)] += 2.0
        frames.append(x)
    return frames


def run_sequence(attrs, shape, with_map, seed):
    """Runs DeltaPool over a frame sequence with the state carried; every frame equals ORT's MaxPool."""
    rng = np.random.default_rng(seed)
    dense, delta = _pair(attrs, with_map)
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    for step, x in enumerate(_frames(rng, shape)):
        feed = {"x": x, "x_ref": x_ref, "y_prev": y_prev}
        if with_map:
            feed["map_in"] = exact_change_map(x, prev)
        y, x_ref_next, m = delta.run(None, feed)
        want = dense.run(None, {"x": x})[0]
        assert y.shape == want.shape
        np.testing.assert_array_equal(y, want, err_msg=f"{attrs} {shape} map={with_map} frame {step}")
        assert m.shape == (shape[0], 1) + want.shape[2:]
        x_ref, y_prev, prev = x_ref_next, y, x


def check_fixed_cases(seed=3):
    for _, attrs, shape in CASES:
        for with_map in (False, True):
            run_sequence(attrs, shape, with_map, seed)
    check_nan_cases(seed)


def check_nan_cases(seed=3):
    """NaN in a window gives NaN, through whole-plane and partial updates, and goes when the NaN goes."""
    rng = np.random.default_rng(seed)
    for attrs, shape in [(dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 20, 12, 17)),
                         (dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), (1, 4, 13, 19)),
                         (dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1]), (1, 3, 14, 16))]:
        _, delta = _pair(attrs, with_map=False)
        x = rng.standard_normal(shape).astype(np.float32)
        x_ref, y_prev = EMPTY, EMPTY
        spots = [(0, 0), (shape[2] - 1, shape[3] - 1), (shape[2] // 2, shape[3] // 2), (0, shape[3] - 1)]
        frames = [x]
        for spot in spots:  # a NaN appears (first frame too), moves, and finally leaves
            f = x.copy()
            f[0, rng.integers(0, shape[1]), spot[0], spot[1]] = np.nan
            frames.append(f)
        frames.append(x)
        first = frames[1]
        for f in [first] + frames:
            y, x_ref_next, _ = delta.run(None, {"x": f, "x_ref": x_ref, "y_prev": y_prev})
            want = reference.maxpool2d(f, **attrs)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=f"{attrs} NaN positions")
            np.testing.assert_array_equal(y, want)  # equal_nan: NaN matches NaN
            assert np.isnan(y).any() == np.isnan(f).any()
            x_ref, y_prev = x_ref_next, y


@pytest.mark.sanitizer
@pytest.mark.parametrize("name,attrs,shape", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_map", [False, True])
def test_delta_pool_fast_paths_equal_ort_maxpool(name, attrs, shape, with_map):
    run_sequence(attrs, shape, with_map, seed=len(name))


@pytest.mark.sanitizer
def test_nan_in_a_window_gives_nan_and_leaves_with_it():
    check_nan_cases()


@pytest.mark.sanitizer
def test_dense_fraction_one_keeps_partial_updates_exact(rng):
    """With dense_fraction 1 the op never falls back to whole planes: large partial updates go through the runs."""
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    dense, _ = _pair(attrs, with_map=False)
    node = helper.make_node("DeltaPool", ["x", "x_ref", "y_prev"], ["y", "x_ref_next", "map"], domain=DOMAIN,
                            name="dp", dense_fraction=1.0, **attrs)
    delta = op_session(op_model([node], [value_info("x"), value_info("x_ref"), value_info("y_prev")],
                            [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]))
    x = rng.standard_normal((1, 9, 30, 35)).astype(np.float32)
    y, xr, _ = delta.run(None, {"x": x, "x_ref": EMPTY, "y_prev": EMPTY})
    for _ in range(3):
        x = x.copy()
        keep = rng.random((30, 35)) < 0.85  # 15% of the pixels change: most outputs, in ragged runs
        x[0, :, ~keep] = rng.standard_normal((int((~keep).sum()), 9)).astype(np.float32)
        y, xr, m = delta.run(None, {"x": x, "x_ref": xr, "y_prev": y})
        assert 0 < m.mean() < 1
        np.testing.assert_array_equal(y, dense.run(None, {"x": x})[0])


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512"])
def test_every_simd_variant_equals_ort(simd):
    """The fixed cases with the library loaded under DELTAONNX_SIMD=<variant> (a fresh process per variant)."""
    check_under_simd(simd, "test_pool_engine_speedpaths", "check_fixed_cases(seed=11)")
