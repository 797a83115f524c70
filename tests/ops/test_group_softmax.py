"""DeltaConv activation Softmax with activation_params [G]: a softmax over each group of G consecutive output
channels of each pixel (a YOLOv8 DFL head: 4 box sides x 16 bins). Equal to ORT's Conv -> Reshape
[N, M/G, G, -1] -> Softmax(axis 2) -> Reshape at tau 0 over frame sequences, to the numpy reference at tau > 0,
on every path (whole items, the GEMM over changed pixels, depthwise, ORT's NCHWc dense conv) and under every
SIMD variant of the kernel table; pixels the op does not recompute keep Y_prev bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from builders import EMPTY, ConvPair, assert_close_nan, exact_change_map, frame_sequence
from conftest import check_under_simd

# (C, M, G, kernel, group, with_map, hw): the DFL head's 1x1 64 -> 16s (NCHWc-sized), a 3x3 one, groups that
# cross the conv groups' boundaries, depthwise, G = 1 (every value 1) and G = M (today's whole-pixel softmax).
CASES = [
    (16, 64, 16, (1, 1), 1, False, (20, 20)),
    (16, 64, 16, (1, 1), 1, True, (13, 40)),
    (8, 32, 16, (3, 3), 1, True, (17, 23)),
    (6, 12, 3, (3, 3), 2, False, (9, 30)),
    (4, 12, 4, (3, 3), 4, True, (11, 13)),
    (4, 8, 8, (3, 3), 4, False, (11, 13)),
    (4, 6, 1, (3, 3), 1, False, (7, 9)),
    (4, 6, 2, (5, 3), 1, True, (12, 60)),
]


def _pair(rng, C, M, G, kernel, group, with_map, threshold=0.0):
    w = rng.standard_normal((M, C // group) + kernel).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    pads = [kernel[0] // 2, kernel[1] // 2] * 2
    return ConvPair(w, b, dict(pads=pads, group=group), "Softmax", act_params=[G], threshold=threshold,
                    with_map=with_map)


def check_group_softmax_cases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kinds = ["first", "local", "none", "local", "nan", "global", "local", "resize", "local"]
    for C, M, G, kernel, group, with_map, hw in CASES:
        pair = _pair(rng, C, M, G, kernel, group, with_map)
        x_ref, y_prev, prev = EMPTY, EMPTY, None
        for x in frame_sequence(rng, (2, C) + hw, kinds):
            sentinel = y_prev.copy()
            y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
            assert_close_nan(y, pair.run_dense(x), rtol=1e-5, atol=1e-6)
            if sentinel.shape == y.shape:  # normalising a kept pixel again would change it
                kept = np.broadcast_to(map_out == 0, y.shape)
                np.testing.assert_array_equal(y[kept].view(np.uint32), sentinel[kept].view(np.uint32))
            x_ref, y_prev, prev = x_ref_next, y, x


@pytest.mark.sanitizer
def test_group_softmax_equals_ort_reshape_softmax_at_threshold_zero():
    check_group_softmax_cases(seed=3)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512"])
def test_group_softmax_under_every_simd_variant(simd):
    check_under_simd(simd, "test_group_softmax", "check_group_softmax_cases(seed=4)")


@pytest.mark.parametrize("case", CASES[1:4])
def test_group_softmax_follows_the_reference_above_threshold_zero(case, rng):
    """tau > 0: which pixels are recomputed (and so normalised) is the reference's decision, frame after frame."""
    C, M, G, kernel, group, with_map, hw = case
    pair = _pair(rng, C, M, G, kernel, group, with_map, threshold=0.3)
    x_ref = y_prev = EMPTY
    ref_x, ref_y = None, None
    prev = None
    for x in frame_sequence(rng, (1, C) + hw, ["first", "local", "local", "global", "local"]):
        map_in = exact_change_map(x, prev)
        y, x_ref, _ = pair.run_delta(x, x_ref, y_prev, map_in)
        want, ref_x, _ = pair.run_reference(x, ref_x, ref_y, map_in if with_map else None)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
        y_prev, ref_y, prev = y, want, x
