"""Depthwise DeltaConv (group == C == M), which the direct engine computes (ops/delta_conv/cpu/depthwise_engine.cc):
equal to ORT's own Conv at tau = 0 and to the numpy reference above it, over what the engine treats apart --
border columns (stride 1, pads up to the kernel's reach), stride phases (strides 2 and 3), dilation, kernels up to
11x11, rows of several vector blocks and rows narrower than one vector, sparse recompute maps -- with every
activation, on every SIMD variant (each in a subprocess: the variant is chosen when the library loads)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import check_under_simd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltaonnx import reference
from builders import EMPTY, ORT_ACTIVATIONS, ConvPair, assert_close_nan, exact_change_map, frame_sequence

ACTIVATIONS = list(ORT_ACTIVATIONS) + ["PRelu"]
KINDS = ["first", "local", "none", "local", "global", "nan", "local", "resize", "local", "none"]


def _window_fits(h, w, k, dil):
    """The smallest input the window (without padding) covers, so every case has an output."""
    return max(h, (k[0] - 1) * dil[0] + 1), max(w, (k[1] - 1) * dil[1] + 1)


def _attrs(k, stride, dil, pads, channels, auto_pad="NOTSET"):
    attrs = dict(kernel_shape=list(k), strides=list(stride), group=channels)
    if auto_pad == "NOTSET":
        attrs.update(pads=list(pads), dilations=list(dil))
    else:  # ORT's Conv (the oracle) refuses dilations with SAME padding
        attrs.update(auto_pad=auto_pad, dilations=[1, 1] if auto_pad.startswith("SAME") else list(dil))
    return attrs


def _depthwise_pair(rng, channels, attrs, activation, bias=True, with_map=False, threshold=0.0, dense_fraction=0.5):
    k = attrs["kernel_shape"]
    w = rng.standard_normal((channels, 1, k[0], k[1])).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) if bias else None
    return ConvPair(w, b, attrs, activation, with_map=with_map, threshold=threshold, dense_fraction=dense_fraction)


def check_sequence_equals_ort(pair, rng, shape, kinds=KINDS):
    """Rule 5 at tau = 0 on every frame of a sequence, with the change map a producer would pass (when the pair
    takes one)."""
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    for x in frame_sequence(rng, shape, kinds):
        y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
        assert_close_nan(y, pair.run_dense(x))
        assert map_out.shape == (x.shape[0], 1) + y.shape[2:]
        x_ref, y_prev, prev = x_ref_next, y, x


def check_sequence_matches_reference(pair, rng, shape):
    """tau > 0: the reference's map and X_ref_next exactly, its Y where recomputed, and Y_prev bit for bit
    elsewhere."""
    x_ref, y_prev = EMPTY, EMPTY
    for x in frame_sequence(rng, shape, ["first", "local", "none", "local", "global", "local"]):
        y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev)
        ref_y, ref_x_ref, ref_map = pair.run_reference(x, x_ref, y_prev)
        np.testing.assert_array_equal(map_out, ref_map)
        np.testing.assert_array_equal(x_ref_next, ref_x_ref)
        assert_close_nan(y, ref_y)
        if y_prev.shape == y.shape:
            kept = np.broadcast_to(map_out == 0, y.shape)
            np.testing.assert_array_equal(y[kept], y_prev[kept])
        x_ref, y_prev = x_ref_next, y


def check_only_recomputed_pixels_are_written(pair, rng, shape):
    """Y_prev of sentinel values (not what the conv gives): a local change must leave every pixel outside map_out
    at its sentinel, so no vector tail or border path writes past the recomputed runs."""
    x = rng.standard_normal(shape).astype(np.float32)
    y, x_ref, _ = pair.run_delta(x, EMPTY, EMPTY)
    sentinel = np.full_like(y, 1234.5)
    x2 = x.copy()
    h, w = shape[2], shape[3]
    x2[:, :, h // 3: h // 3 + 2, w // 4: w // 4 + 3] += 1.0
    y2, _, map_out = pair.run_delta(x2, x_ref, sentinel)
    marked = np.broadcast_to(map_out != 0, y2.shape)
    assert marked.any()
    np.testing.assert_array_equal(y2[~marked], sentinel[~marked])
    assert_close_nan(y2[marked], pair.run_dense(x2)[marked])


depthwise_cases = st.fixed_dictionaries({
    "k": st.tuples(st.integers(1, 11), st.integers(1, 11)),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dil": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "pads": st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
    "channels": st.integers(1, 9),
    "hw": st.tuples(st.integers(1, 24), st.sampled_from([1, 3, 7, 15, 16, 17, 33, 64, 100, 130, 161, 270])),
    "batch": st.integers(1, 2),
    "bias": st.booleans(),
    "auto_pad": st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    "activation": st.sampled_from(ACTIVATIONS),
    "with_map": st.booleans(),
    "dense_fraction": st.sampled_from([0.5, 1.0]),
    "seed": st.integers(0, 2**31 - 1),
})


@pytest.mark.sanitizer
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depthwise_cases)
def test_depthwise_equals_ort_conv_at_threshold_zero(case):
    """Every frame equals ORT's depthwise Conv (+ activation): random kernels up to 11x11, strides up to 3,
    dilations, pads, widths from 1 to several vector blocks, with and without change maps, sparse (dense_fraction
    1: never densified) and dense items."""
    rng = np.random.default_rng(case["seed"])
    attrs = _attrs(case["k"], case["stride"], case["dil"], case["pads"], case["channels"], case["auto_pad"])
    h, w = _window_fits(*case["hw"], case["k"], attrs["dilations"])
    pair = _depthwise_pair(rng, case["channels"], attrs, case["activation"], case["bias"], case["with_map"],
                           dense_fraction=case["dense_fraction"])
    check_sequence_equals_ort(pair, rng, (case["batch"], case["channels"], h, w))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depthwise_cases, st.sampled_from([0.05, 0.3]))
def test_depthwise_matches_reference_above_zero(case, tau):
    rng = np.random.default_rng(case["seed"])
    attrs = _attrs(case["k"], case["stride"], case["dil"], case["pads"], case["channels"], case["auto_pad"])
    h, w = _window_fits(*case["hw"], case["k"], attrs["dilations"])
    pair = _depthwise_pair(rng, case["channels"], attrs, case["activation"], case["bias"], threshold=tau,
                           dense_fraction=case["dense_fraction"])
    check_sequence_matches_reference(pair, rng, (case["batch"], case["channels"], h, w))


# (channels, kernel, stride, dilation, pads, H, W, activation): each a path of the engine.
FIXED_CASES = [
    (8, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 13, 150, "Relu"),        # rows of several vector blocks
    (3, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 17, 81, "HardSwish"),    # stride 2 (deinterleaved phases), odd width
    (4, (5, 5), (1, 1), (2, 2), (4, 4, 4, 4), 12, 40, "SiLU"),         # dilation, border columns from both sides
    (2, (11, 11), (1, 1), (1, 1), (5, 5, 5, 5), 20, 33, "PRelu"),      # 11x11, per-channel slopes
    (2, (11, 11), (1, 1), (1, 1), (5, 5, 5, 5), 8, 6, "Relu"),         # every column a border column
    (5, (7, 7), (3, 3), (2, 2), (3, 2, 3, 4), 25, 70, "Tanh"),         # stride 3 phases, scalar tanh pass
    (4, (3, 5), (1, 2), (2, 1), (0, 2, 1, 0), 19, 45, "LeakyRelu"),    # mixed strides and dilations
    (6, (3, 3), (2, 1), (1, 1), (0, 0, 2, 2), 16, 9, "Sigmoid"),       # rows narrower than a vector
    (3, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 5, 7, "Clip"),           # 1x1
    (4, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), 21, 300, "HardSigmoid"),  # stride 2, no padding, wide
    (2, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), 10, 21, ""),             # no activation
]


def check_fixed_cases(seed=7):
    rng = np.random.default_rng(seed)
    for channels, k, stride, dil, pads, h, w, activation in FIXED_CASES:
        attrs = _attrs(k, stride, dil, pads, channels)
        for with_map in (False, True):
            for dense_fraction in (0.5, 1.0):
                pair = _depthwise_pair(rng, channels, attrs, activation, with_map=with_map,
                                       dense_fraction=dense_fraction)
                check_sequence_equals_ort(pair, rng, (2, channels, h, w))
        pair = _depthwise_pair(rng, channels, attrs, activation, threshold=0.2, dense_fraction=1.0)
        check_sequence_matches_reference(pair, rng, (1, channels, h, w))
        pair = _depthwise_pair(rng, channels, attrs, activation, dense_fraction=1.0)
        check_only_recomputed_pixels_are_written(pair, rng, (1, channels, h, w))


@pytest.mark.sanitizer
def test_fixed_cases_in_this_process():
    check_fixed_cases()


def test_pixels_not_recomputed_keep_y_prev(rng):
    for stride in (1, 2):
        attrs = _attrs((3, 3), (stride, stride), (1, 1), (1, 1, 1, 1), 16)
        pair = _depthwise_pair(rng, 16, attrs, "Relu", dense_fraction=1.0)
        check_only_recomputed_pixels_are_written(pair, rng, (1, 16, 40, 170))


def scattered_frames(rng, shape, count=8, patches=14):
    """Frames whose changes are many small patches, some on the left and right edges: rows of a recomputed map
    then hold several runs with gaps between them, and runs that widen from one output row to the next."""
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [x]
    for _ in range(count - 1):
        x = x.copy()
        for p in range(patches):
            size = int(rng.integers(1, 4))
            y0 = int(rng.integers(0, h))
            x0 = [0, w - size][p % 2] if p < 4 else int(rng.integers(0, w))
            x[:, :, y0:y0 + size, x0:x0 + size] += 1.0
        frames.append(x)
    return frames


@pytest.mark.sanitizer
@pytest.mark.parametrize("k,stride,pad", [(3, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 2), (3, 3, 1), (4, 2, 0)])
def test_scattered_changes_equal_ort(rng, k, stride, pad):
    """Sparse maps of many runs per row (never densified): every frame equals ORT's Conv."""
    C = 9  # a group of 8 channels and one more
    attrs = _attrs((k, k), (stride, stride), (1, 1), (pad,) * 4, C)
    pair = _depthwise_pair(rng, C, attrs, "Relu", dense_fraction=1.0)
    x_ref, y_prev = EMPTY, EMPTY
    for x in scattered_frames(rng, (1, C, 31, 75)):
        y, x_ref, map_out = pair.run_delta(x, x_ref, y_prev)
        assert_close_nan(y, pair.run_dense(x))
        y_prev = y


@pytest.mark.parametrize("stride", [1, 2])
def test_threads_give_the_same_bits(rng, stride):
    """Channel groups and bands of runs shared among threads: each output is summed the same way whichever
    thread computes it, so two threads give exactly what one gives (dense and sparse items)."""
    C = 20
    w = rng.standard_normal((C, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    attrs = _attrs((3, 3), (stride, stride), (1, 1), (1, 1, 1, 1), C)
    one = ConvPair(w, b, attrs, "HardSwish", dense_fraction=1.0, threads=1)
    two = ConvPair(w, b, attrs, "HardSwish", dense_fraction=1.0, threads=2)
    states = {1: (EMPTY, EMPTY), 2: (EMPTY, EMPTY)}
    for x in frame_sequence(rng, (1, C, 37, 150), ["first", "local", "local", "global", "local"]):
        out = {}
        for threads, pair in ((1, one), (2, two)):
            out[threads] = pair.run_delta(x, *states[threads])
            states[threads] = (out[threads][1], out[threads][0])
        for a, b_ in zip(out[1], out[2]):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512"])
def test_every_simd_variant_equals_ort(simd):
    """The fixed cases with the library loaded under DELTAONNX_SIMD=<variant> (a fresh process per variant)."""
    check_under_simd(simd, "test_depthwise", "check_fixed_cases(seed=11)")
