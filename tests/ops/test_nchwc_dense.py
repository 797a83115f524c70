"""DeltaConv's dense path on ORT's NCHWc kernels (ops/delta_conv/cpu/nchwc_dense_conv.h).

A batch item recomputed everywhere (first frame, or more than dense_fraction changed) runs through ORT's own
ReorderInput / NCHWc Conv / ReorderOutput: the same kernels, with the same blocked weights, that ORT's session
runs for a Conv at ORT_ENABLE_ALL, so those outputs equal ORT's bit for bit. That is what shows the path is
taken; with DELTAONNX_DENSE_ENGINE=own, or when the layout check finds the weights blocked wrongly, the op's own
kernels compute the item instead (equal to float tolerance, no longer bit for bit).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders import EMPTY, ConvPair, assert_close_nan, exact_change_map, frame_sequence
from concurrency import run_in_threads
from conftest import IMPORT_PATH, check_under_simd
from deltaonnx.reference import from_blocked

TESTS = Path(__file__).resolve().parent


def _nchwc_available():
    from deltaonnx import _native

    return bool(_native.cpu_features().get("avx2"))  # MLAS has NCHWc kernels with AVX2 or AVX-512


needs_nchwc = pytest.mark.skipif(not _nchwc_available(), reason="ORT has NCHWc kernels only on x86 with AVX2")

# (C, M, kernel, stride, dilation, pads, group, batch): group 1 with C a multiple of the block (8 or 16), C below
# the block (NCHW input read directly), M not a multiple of the block (padded), depthwise, asymmetric pads; C = 24,
# 40 and 72 (multiples of 4, not of 16: ReorderInput pads them to whole blocks at b = 16, as dense ORT does); each
# with few enough pad lanes at b = 16 for the path (test_lane_waste_leaves_items_to_our_engine);
# auto_pad SAME_UPPER / SAME_LOWER (the invoked Conv resolves the pads for each input size, as dense ORT's),
# an even kernel, depthwise.
QUALIFYING = [
    (16, 32, 3, 2, 1, [1, 1, 1, 1], 1, 1),
    (32, 40, 3, 1, 2, [2, 1, 0, 2], 1, 2),
    (3, 14, 3, 1, 1, [1, 1, 1, 1], 1, 1),
    (3, 16, 7, 2, 1, [3, 3, 3, 3], 1, 1),
    (48, 48, 3, 1, 1, [1, 1, 1, 1], 48, 1),
    (64, 16, 1, 2, 1, [0, 0, 0, 0], 1, 1),
    (24, 32, 3, 2, 1, [1, 1, 1, 1], 1, 1),
    (40, 24, 1, 2, 1, [0, 0, 0, 0], 1, 1),
    (72, 40, 3, 2, 1, [1, 0, 1, 1], 1, 2),
    (16, 24, 3, 2, 1, "SAME_UPPER", 1, 1),
    (32, 16, 4, 1, 1, "SAME_LOWER", 1, 1),
    (48, 48, 5, 2, 1, "SAME_UPPER", 48, 1),
]


def _pair(case, activation="", with_map=False, rng=None, threads=1):
    C, M, k, s, d, pads, g, _ = case
    w = (rng.standard_normal((M, C // g, k, k)) / np.sqrt(C // g * k * k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], dilations=[d, d], group=g)
    attrs.update(auto_pad=pads) if isinstance(pads, str) else attrs.update(pads=pads)
    return ConvPair(w, b, attrs, activation, with_map=with_map, threads=threads)


def _frames(case, rng, kinds):
    C, _, _, _, _, _, _, n = case
    return frame_sequence(rng, (n, C, 21, 34), kinds)


@pytest.mark.sanitizer
@needs_nchwc
@pytest.mark.parametrize("case", QUALIFYING)
@pytest.mark.parametrize("activation", ["", "Relu"])
@pytest.mark.parametrize("with_map", [False, True])
def test_dense_items_equal_orts_nchwc_conv_bit_for_bit(case, activation, with_map, rng):
    """First frames and all-new frames are ORT's own NCHWc result (Relu applied after: max(x, 0) is exact);
    partial frames in between stay within float tolerance of ORT."""
    pair = _pair(case, activation, with_map, rng)
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    kinds = ["first", "local", "global", "local", "global"]
    for kind, x in zip(kinds, _frames(case, rng, kinds)):
        y, x_ref_next, _ = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
        own_1x1 = case[2] == 1 and case[3] == 1 and not with_map  # our engine serves 1x1 s1 with a reference
        if kind in ("first", "global") and not own_1x1:
            np.testing.assert_array_equal(y, pair.run_dense(x))
        else:
            assert_close_nan(y, pair.run_dense(x))
        x_ref, y_prev, prev = x_ref_next, y, x


@needs_nchwc
@pytest.mark.parametrize("C, M, k, s", [(18, 20, 3, 1), (30, 8, 3, 2), (18, 6, 1, 1)])
def test_channels_no_multiple_of_four_stay_on_our_engine(C, M, k, s, rng):
    """C >= 16 and C % 4 != 0: ORT's ReorderInput refuses such a count (dense ORT runs the conv NCHW), so our engine
    computes the item: right, and not the bits of ORT's NCHWc Conv over the input padded with zero channels to a
    multiple of 4. Handed to ORT's reorder, the item would fail."""
    if _block() != 16:
        pytest.skip("MLAS's block of 16")
    C4 = -(-C // 4) * 4
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
    pair = ConvPair(w, bias, attrs)
    w4 = np.zeros((M, C4, k, k), np.float32)
    w4[:, :C] = w
    padded = ConvPair(w4, bias, attrs)
    x = rng.standard_normal((1, C, 19, 26)).astype(np.float32)
    x4 = np.zeros((1, C4) + x.shape[2:], np.float32)
    x4[:, :C] = x
    y, _, _ = pair.run_delta(x, EMPTY, EMPTY)
    assert_close_nan(y, pair.run_dense(x))
    if k > 1:  # a 1x1 sums in the same order either way
        assert not np.array_equal(y, padded.run_dense(x4)), "ORT's NCHWc bits"


@needs_nchwc
@pytest.mark.parametrize("C, M, s, layout", [(8, 8, 1, "nchw"), (3, 8, 2, "nchw"), (24, 16, 1, "nchw"),
                                             (32, 24, 1, "nchw"), (8, 24, 1, "blocked_out"), (24, 40, 1, "blocked_out")])
def test_lane_waste_leaves_items_to_our_engine(C, M, s, layout, rng):
    """Where ORT's NCHWc Conv would compute over 1.25x the FMAs of our NCHW engine at stride 1 (2x at stride 2:
    lanes past C and M up to the block of 16, nchwc_dense_conv.cc lane_waste_favours_own_engine), our engine
    computes the dense items, measured faster: right, and not the bits of dense ORT's NCHWc Conv."""
    if _block() != 16:
        pytest.skip("MLAS's block of 16")
    w = (rng.standard_normal((M, C, 3, 3)) / np.sqrt(C * 9)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[s, s], pads=[1, 1, 1, 1])
    pair = ConvPair(w, bias, attrs, delta_attrs={"layout": layout})
    x = rng.standard_normal((1, C, 19, 26)).astype(np.float32)
    y, _, _ = pair.run_delta(x, EMPTY, EMPTY)
    if layout == "blocked_out":
        y = from_blocked(y, 16, M)
    dense = pair.run_dense(x)
    assert_close_nan(y, dense)
    assert not np.array_equal(y, dense), "ORT's NCHWc bits"


def _block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


def check_activations_after_the_conv(activation: str, seed: int) -> None:
    """Relu runs inside ORT's Conv; the other activations are applied while our kernel table unblocks the NCHWc
    output (kernel_table.h `unblock`). NaN frames: both keep a NaN visible. M = 20 and 5 leave a partial
    channel block, 19x23 and 7x9 a partial run of pixels."""
    rng = np.random.default_rng(seed)
    for M, (h, w) in [(20, (19, 23)), (5, (7, 9)), (32, (4, 70))]:
        pair = _pair((16, M, 3, 1, 1, [1, 1, 1, 1], 1, 2), activation, False, rng)
        x_ref, y_prev = EMPTY, EMPTY
        for x in frame_sequence(rng, (2, 16, h, w), ["first", "local", "global", "nan", "global"]):
            y, x_ref, _ = pair.run_delta(x, x_ref, y_prev)
            assert_close_nan(y, pair.run_dense(x))
            y_prev = y


@pytest.mark.sanitizer
@needs_nchwc
@pytest.mark.parametrize("activation", ["Relu", "SiLU", "PRelu", "HardSwish", "Sigmoid", "Clip", "LeakyRelu",
                                        "Tanh", "Softmax"])
def test_activations_after_the_nchwc_conv_match_ort(activation):
    check_activations_after_the_conv(activation, seed=5)


@needs_nchwc
@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512"])
def test_unblocked_activations_under_every_simd_variant(simd):
    check_under_simd(simd, "test_nchwc_dense", "check_activations_after_the_conv('SiLU', seed=6)")


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
@pytest.mark.parametrize("block", [8, 16, 4])
@pytest.mark.parametrize("activation", ["", "SiLU", "PRelu", "HardSwish", "Tanh"])
def test_unblock_activate_kernel(simd, block, activation, rng):
    """kernel_table.h `unblock_activate` against numpy's transpose and the scalar kernel, every variant: blocks
    of MLAS's sizes (8, 16) and another (handed to the scalar kernel), partial channel blocks, runs with a tail
    of pixels, a slope per channel (PRelu). A wrong unblock would not show in the op's outputs: the
    once-per-process layout check (nchwc_dense_conv.h) would find its synthetic item wrong and hand every item
    to our own kernels, hence this direct test."""
    from deltaonnx import _native

    if simd not in _native.simd_variants():
        pytest.skip(f"{simd} not supported here")
    for channels, n in [(block, 16), (3 * block - 3, 37), (1, 5), (2 * block, 1), (block + 1, 256)]:
        blocks = -(-channels // block)
        blocked = (3 * rng.standard_normal((blocks, n, block))).astype(np.float32)
        params = list(np.linspace(-0.5, 0.5, channels)) if activation == "PRelu" else []
        got = _native.unblock_activate(blocked, channels, activation, params, simd=simd)
        want = _native.unblock_activate(blocked, channels, activation, params, simd="scalar")
        transposed = blocked.transpose(0, 2, 1).reshape(blocks * block, n)[:channels]
        if not activation:
            np.testing.assert_array_equal(want, transposed)
        elif activation == "SiLU":
            np.testing.assert_allclose(want, transposed / (1 + np.exp(-transposed.astype(np.float64))), rtol=1e-6,
                                       atol=1e-7)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


@needs_nchwc
def test_threads_on_one_session_with_dense_items(rng):
    """Several threads, each with its own state, through one session whose items run densely."""
    case = (16, 32, 3, 1, 1, [1, 1, 1, 1], 1, 1)
    pair = _pair(case, "Relu", False, rng, threads=2)
    streams = [_frames(case, rng, ["first", "global", "local", "global"]) for _ in range(4)]
    expected = [[pair.run_dense(x) for x in frames] for frames in streams]

    def work(i):
        x_ref, y_prev = EMPTY, EMPTY
        for _ in range(3):
            for x, want in zip(streams[i], expected[i]):
                y, x_ref, _ = pair.run_delta(x, x_ref, y_prev)
                assert_close_nan(y, want)
                y_prev = y

    run_in_threads(work, range(4))


def check_engine_is_own(seed: int) -> None:
    """Run in a subprocess under DELTAONNX_DENSE_ENGINE: the items are right, but not ORT's bits."""
    rng = np.random.default_rng(seed)
    # (Our depthwise engine sums the taps in MLAS's order: its bits match either way, so it is not listed.)
    for case in [(64, 64, 3, 1, 1, [1, 1, 1, 1], 1, 1), (3, 14, 3, 1, 1, [1, 1, 1, 1], 1, 1),
                 (32, 40, 3, 1, 2, [2, 1, 0, 2], 1, 2), (72, 40, 3, 2, 1, [1, 1, 1, 1], 1, 1)]:
        pair = _pair(case, "", True, rng)
        x_ref, y_prev, prev, same_bits = EMPTY, EMPTY, None, True
        for x in _frames(case, rng, ["first", "local", "global"]):
            y, x_ref, _ = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
            dense = pair.run_dense(x)
            assert_close_nan(y, dense)
            same_bits &= bool(np.array_equal(y, dense))
            y_prev, prev = y, x
        assert not same_bits, f"{case}: ORT's bits: the NCHWc path ran"


def _in_subprocess(env_value: str, call: str) -> None:
    code = f"import os, sys; sys.path[:0] = sys.argv[1].split(os.pathsep); import test_nchwc_dense as t; t.{call}"
    done = subprocess.run([sys.executable, "-c", code, os.pathsep.join(IMPORT_PATH)], cwd=TESTS, capture_output=True,
                          text=True,
                          env=dict(os.environ, DELTAONNX_DENSE_ENGINE=env_value), timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@needs_nchwc
def test_own_engine_when_asked():
    _in_subprocess("own", "check_engine_is_own(seed=3)")


@pytest.mark.sanitizer
@needs_nchwc
def test_a_wrong_weight_layout_is_caught_and_our_kernels_take_over():
    """Weights blocked in the wrong order (a test-only setting) fail the once-per-process layout check: every
    output is still right, computed by our kernels."""
    _in_subprocess("nchwc-wrong-layout", "check_engine_is_own(seed=4)")
