"""DeltaConv with layout = "blocked" (docs/ops.md#blocked-layout): X, X_ref, Y, Y_prev hold [N][C/b][H][W][b]
memory under their 4-D shape, b the library's channel block (deltaonnx._native.channel_block()).

At tau 0 a sequence of frames through the blocked op, its tensors blocked and unblocked here in numpy, equals ORT's
dense Conv and the NCHW DeltaConv on the same frames; its maps and moved reference equal the NCHW op's exactly.
Items recomputed everywhere take ORT's NCHWc Conv without reorders when b is MLAS's block: equal to dense ORT
bit for bit (no activation or Relu). Each case runs under every SIMD variant and with b forced to 8 and 1.
"""
from __future__ import annotations

import numpy as np
import pytest

from builders import EMPTY, ConvPair, assert_close_nan, conv_model, exact_change_map, frame_sequence, op_session
from conftest import check_under_simd
from deltaonnx.reference import from_blocked, to_blocked


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


def mlas_block() -> int:
    from deltaonnx import _native

    features = _native.cpu_features()
    return 16 if features.get("avx512") else 8 if features.get("avx2") else 0


# (C, M, kernel, stride, dilation, pads, batch, H, W): 3x3 s1 and s2, 1x1, odd sizes with asymmetric pads and a
# dilation (borders), batch 2. Channel counts are multiples of 16, so of every b.
CASES = [
    (16, 32, 3, 1, 1, [1, 1, 1, 1], 1, 19, 26),
    (32, 16, 3, 2, 1, [1, 1, 1, 1], 2, 21, 34),
    (32, 48, 1, 1, 1, [0, 0, 0, 0], 1, 17, 23),
    (16, 16, 3, 1, 2, [2, 1, 0, 2], 2, 13, 15),
    (16, 64, 3, 1, 1, [1, 1, 1, 1], 1, 11, 14),
]
# The tile GEMM's register blockings by output blocks M/b (common/blocked_lines.h): at b = 16, M = 64, 32 and
# 16/48 take 6x4, 12x2 and 24x1 pixels x blocks; at b = 8 (AVX2), M = 24 is the one odd count of blocks (12x1).
ODD_BLOCKS_AT_8 = (8, 24, 3, 1, 1, [1, 1, 1, 1], 1, 12, 17)
ACTIVATIONS = ["", "Relu", "SiLU", "PRelu"]  # PRelu: a slope per channel, applied lane by lane
KINDS = ["first", "local", "none", "nan", "local", "global", "local"]


def _pair(case, activation, with_map, rng):
    C, M, k, s, d, pads = case[:6]
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], dilations=[d, d], pads=pads)
    nchw = ConvPair(w, bias, attrs, activation, with_map=with_map)
    blocked = ConvPair(w, bias, attrs, activation, with_map=with_map, delta_attrs={"layout": "blocked"})
    return nchw, blocked


def wide_bands(rng, shape):
    """Frames whose changes are bands of rows wider than the engine's units of 48 pixels: long runs read where
    they lie (stride 1 and 2), their ends at the left and right borders gathered; a band at the top border (rows
    whose windows leave the input: gathered), one across the whole width, and a NaN inside a band."""
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [("first", x)]
    for y0, x0, width in [(h // 2, w // 7, 2 * w // 3), (0, w // 5, 3 * w // 4), (h - 3, 0, w), (1, 3, w // 2)]:
        x = x.copy()
        x[:, :, y0:y0 + 3, x0:x0 + width] += 1.0
        frames.append(("band", x))
    x = x.copy()
    x[:, :, h // 3:h // 3 + 2, :] -= 0.5
    x[0, c - 1, h // 3, w // 2] = np.nan
    frames.append(("nan", x))
    return frames


def compare_blocked_with_nchw(nchw, blocked, frames, activation, label, all_ones_map=False):
    """Runs `frames` ([(kind, x)]) through the NCHW and the blocked op of one conv at tau 0: maps and references
    equal, Y equal to the NCHW op's and dense ORT's (bit for bit on first and all-new frames where dense ORT's is
    ORT's NCHWc Conv on the blocked tensors as they are). all_ones_map: every frame's map marks every pixel (the
    op's own change test then decides, as without a map)."""
    b = channel_block()
    dense_is_orts = b == mlas_block() and activation in ("", "Relu")  # MLAS fuses Relu into its Conv
    state_n, state_b, prev = (EMPTY, EMPTY), (EMPTY, EMPTY), None
    for kind, x in frames:
        change = np.ones_like(exact_change_map(x, None)) if all_ones_map else exact_change_map(x, prev)
        y_n, ref_n, map_n = nchw.run_delta(x, *state_n, change)
        y_b, ref_b, map_b = blocked.run_delta(to_blocked(x, b), *state_b, change)
        dense = nchw.run_dense(x)
        where = f"{label} b={b} frame {kind}"
        np.testing.assert_array_equal(map_b, map_n, err_msg=where)
        np.testing.assert_array_equal(from_blocked(ref_b, b), ref_n, err_msg=where)
        assert_close_nan(from_blocked(y_b, b), dense)
        assert_close_nan(from_blocked(y_b, b), y_n)
        if kind in ("first", "global") and dense_is_orts:
            np.testing.assert_array_equal(from_blocked(y_b, b), dense, err_msg=where)
        state_n, state_b, prev = (ref_n, y_n), (ref_b, y_b), x


def check_case(case, activation, with_map, seed, frames=None):
    rng = np.random.default_rng(seed)
    nchw, blocked = _pair(case, activation, with_map, rng)
    C, n, H, W = case[0], case[6], case[7], case[8]
    if frames is None:
        frames = list(zip(KINDS, frame_sequence(rng, (n, C, H, W), KINDS)))
    compare_blocked_with_nchw(nchw, blocked, frames, activation, f"{case} {activation!r} map={with_map}")


def check_all_cases(seed=5):
    for i, case in enumerate(CASES):
        for activation in ACTIVATIONS:
            for with_map in (False, True):
                check_case(case, activation, with_map, seed + i)
    check_wide_rows(seed)
    check_scattered_pixels(seed)


# Wide rows (docs/ops.md#blocked-layout): 3x3 stride 1 and 2 (M/b blocks 2 and 4 at b = 16), a 1x1, and a
# dilated 3x3 whose windows leave the input further from the borders. The first two have 47 outputs per row
# whose windows stay inside: a changed row is a unit's tail (4 x 12 - 1 pixels).
WIDE_CASES = [
    (16, 32, 3, 1, 1, [1, 1, 1, 1], 1, 9, 49),
    (16, 64, 3, 2, 1, [1, 1, 1, 1], 2, 11, 97),
    (32, 16, 1, 1, 1, [0, 0, 0, 0], 1, 5, 53),
    (16, 16, 3, 1, 2, [2, 2, 2, 2], 1, 9, 70),
]


def check_wide_rows(seed=7):
    for i, case in enumerate(WIDE_CASES):
        C, n, H, W = case[0], case[6], case[7], case[8]
        for activation in ("", "SiLU"):
            frames = wide_bands(np.random.default_rng(seed + i), (n, C, H, W))
            check_case(case, activation, True, seed + i, frames)


# Changed pixels scattered one by one, in numbers that leave every tail of the GEMM's pixel groups (12 or 6 pixels
# on AVX-512 and AVX2, then groups of 4 and of 1) and of the engine's units of 48 to 192 inside pixels: a group
# mixes pixels of several rows, read where they lie, and outputs at the borders are gathered. The 1x1 convs
# recompute exactly the changed pixels (M/b = 4 at b = 16, 8 at b = 8; on 56x56, 1100 and 1550 of them, below
# dense_fraction 0.5, make units of 96 and 192);
# the others, odd sizes: the stem's 3x3 s2 16->32, a dilated 3x3 with asymmetric pads, and a conv without padding
# (every window inside; M/b = 3).
SCATTER_COUNTS = [1, 3, 4, 5, 7, 11, 12, 13, 25, 47, 48, 49, 61, 97, 1100, 1550]
SCATTER_CASES = [
    (32, 64, 1, 1, 1, [0, 0, 0, 0], 1, 13, 17),
    (16, 32, 1, 1, 1, [0, 0, 0, 0], 1, 56, 56),
    (16, 32, 3, 2, 1, [1, 1, 1, 1], 1, 23, 31),
    (16, 16, 3, 1, 2, [2, 1, 0, 2], 1, 15, 22),
    (16, 48, 3, 1, 1, [0, 0, 0, 0], 1, 12, 19),
]


def scattered_pixels(rng, shape, counts=SCATTER_COUNTS):
    """A first frame, then one frame per count changing that many pixels (all channels) chosen anywhere."""
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [("first", x)]
    for count in counts:
        x = x.copy()
        where = rng.choice(h * w, size=min(count, h * w), replace=False)
        x[:, :, where // w, where % w] += 1.0
        frames.append((f"{count} pixels", x))
    return frames


def check_scattered_pixels(seed=19):
    for i, case in enumerate(SCATTER_CASES):
        C, n, H, W = case[0], case[6], case[7], case[8]
        for activation, with_map in (("", True), ("SiLU", False)):
            check_case(case, activation, with_map, seed + i, scattered_pixels(np.random.default_rng(seed + i), (n, C, H, W)))


@pytest.mark.parametrize("case", SCATTER_CASES)
def test_scattered_pixels(case):
    C, n, H, W = case[0], case[6], case[7], case[8]
    for activation in ("", "PRelu"):
        check_case(case, activation, True, 21, scattered_pixels(np.random.default_rng(21), (n, C, H, W)))


@pytest.mark.parametrize("case", WIDE_CASES)
def test_wide_rows(case):
    C, n, H, W = case[0], case[6], case[7], case[8]
    for activation in ("", "PRelu"):
        check_case(case, activation, True, 9, wide_bands(np.random.default_rng(9), (n, C, H, W)))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_map", [False, True])
def test_blocked_equals_dense_ort_and_nchw_op(case, activation, with_map):
    check_case(case, activation, with_map, seed=3)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_blocked_layout", "check_all_cases(seed=11)")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "scalar"), ("1", "scalar")])
def test_forced_channel_block(block, simd):
    """b = 8 (AVX2's block, its vector kernels) and b = 1 on any machine: where b is not MLAS's block the tile
    engine does everything, the NCHWc dense path off."""
    check_under_simd(simd, "test_blocked_layout", "check_all_cases(seed=13)", channel_block=block)


def check_odd_blocks_at_8(seed=17):
    for activation in ACTIVATIONS:
        check_case(ODD_BLOCKS_AT_8, activation, True, seed)


@pytest.mark.parametrize("simd", ["avx2", "scalar"])
def test_odd_output_blocks_at_block_8(simd, monkeypatch):
    """AVX2's 12x1 blocking: M/b odd, which channel counts that are multiples of 16 never give."""
    monkeypatch.setenv("DELTAONNX_CHANNEL_BLOCK", "8")
    check_under_simd(simd, "test_blocked_layout", "check_odd_blocks_at_8()")


def test_dropped_reference_with_map(rng):
    """tau 0 with a change map and no X_ref: the map's marks are the changes, recomputed from X itself."""
    b = channel_block()
    C, M = 16, 32
    w = (rng.standard_normal((M, C, 3, 3)) / 12).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    dropped = op_session(conv_model(dict(attrs, layout="blocked"), W=w, with_map=True, ref_input=False))
    dense = ConvPair(w, None, attrs)
    y_prev, prev = EMPTY, None
    for x in frame_sequence(rng, (1, C, 15, 18), ["first", "local", "local", "none"]):
        y, _ = dropped.run(None, {"X": to_blocked(x, b), "Y_prev": y_prev, "map_in": exact_change_map(x, prev)})
        assert_close_nan(from_blocked(y, b), dense.run_dense(x))
        y_prev, prev = y, x


def _session_error(attrs, C=16, M=16):
    w = np.zeros((M, C // attrs.get("group", 1), 3, 3), np.float32)
    with pytest.raises(Exception) as info:
        op_session(conv_model(dict(dict(kernel_shape=[3, 3]), **attrs), W=w))
    return str(info.value)


@pytest.mark.parametrize("attrs, message", [
    (dict(layout="nhwc"), "'layout' must be \"nchw\", \"blocked\" or \"blocked_out\""),
    (dict(layout="blocked", group=2), "needs group = 1"),
    (dict(layout="blocked", activation="Softmax"), "does not take the channel activation"),
    (dict(layout="blocked", gate="block", threshold=0.1), "needs gate = \"pixel\""),
])
def test_refused_attribute_combinations(attrs, message):
    assert message in _session_error(attrs)
