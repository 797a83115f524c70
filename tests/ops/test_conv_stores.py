"""Which output pixels the GEMM engine of DeltaConv writes (ops/delta_conv/cpu/conv_engine.cc): with Y_prev full of
sentinels (values no conv gives), every pixel outside map_out must keep its sentinel bit for bit and every pixel
inside must equal ORT's Conv. The change patterns reach each store path: gathered panels (scattered pixels and
every run of a map narrower than a tile: the kernel table's scatter_pieces), raster panels of runs joined across
short gaps (store_flagged: the pixels between the runs are computed but must not be stored), and whole rows;
the border ring (outputs whose window leaves the input, packed with bounds checks) and the interior (read from
the input itself, or through the phase split for strided and over-padded convs), and past a quarter of the
output everything through the split; on every SIMD variant (each in a subprocess: the variant is chosen when
the library loads)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import check_under_simd
from builders import EMPTY, ConvPair, assert_close_nan

# channels in, channels out, group, kernel, stride, pads (top, left, bottom, right), height, width, dilation
SHAPES = [
    (5, 12, 1, (3, 3), (1, 1), (1, 1, 1, 1), 14, 130, 1),   # wide map: raster panels and gathered short runs
    (5, 12, 1, (3, 3), (1, 1), (1, 1, 1, 1), 14, 20, 1),    # narrower than a tile: every run gathered
    (8, 20, 1, (1, 1), (1, 1), (0, 0, 0, 0), 9, 70, 1),     # 1x1: runs over the flat plane, across row ends
    (6, 9, 1, (3, 3), (2, 2), (1, 1, 1, 1), 20, 150, 1),    # stride 2 (phase split), short last channel panel
    (8, 8, 2, (3, 3), (1, 1), (0, 0, 0, 0), 12, 90, 1),     # grouped
    (4, 10, 1, (3, 3), (1, 1), (2, 1, 0, 2), 13, 75, 1),    # over-padded: wider output than input (the split)
    (3, 8, 1, (3, 3), (2, 2), (2, 1, 1, 2), 17, 131, 1),    # stride 2, asymmetric pads: wide border ring
    (5, 9, 1, (3, 3), (1, 1), (2, 2, 2, 2), 15, 100, 2),    # dilated: a border ring two pixels deep
    (6, 7, 1, (3, 1), (1, 1), (1, 0, 1, 0), 12, 60, 1),     # 1-wide kernel with padded rows: flat with border rows
]


def _changes(shape, pattern):
    """Input pixels to change: single pixels far apart, pixels a few columns apart along a row (their recomputed
    runs joined across the gaps into one raster run), or long runs."""
    _, _, h, w = shape
    mask = np.zeros((h, w), bool)
    if pattern == "scattered":
        mask[1::5, 2::23] = True
    elif pattern == "gaps":  # every 6th column over 60: recomputed runs with gaps shorter than 8, joined into one
        mask[h // 2, 2: min(w - 1, 62): 6] = True
        mask[h // 3, 5: min(w - 1, 65): 7] = True
    elif pattern == "long":
        mask[h // 4, 1: w - 1] = True
        mask[h - 2, w // 3: w // 3 + 40] = True
    elif pattern == "half":  # over a quarter of the output: read through the phase split, pieces included
        mask[: h // 2] = True
        mask[h // 2 + 2:: 3, 5:: 11] = True
    elif pattern == "edges":  # the border ring: corners, pixels along every edge, a run along the top row
        mask[0, 0] = mask[-1, -1] = mask[0, -1] = mask[-1, 0] = True
        mask[2::5, 0] = mask[3::4, -1] = mask[-1, 4::9] = True
        mask[0, w // 4: w // 4 + 20] = True
    return mask


def check_store_paths(seed=5):
    rng = np.random.default_rng(seed)
    for c, m, group, k, stride, pads, h, w, dilation in SHAPES:
        attrs = dict(kernel_shape=list(k), strides=list(stride), pads=list(pads), group=group,
                     dilations=[dilation, dilation])
        weights = rng.standard_normal((m, c // group, *k)).astype(np.float32)
        bias = rng.standard_normal(m).astype(np.float32)
        for activation in ("", "SiLU"):
            pair = ConvPair(weights, bias, attrs, activation, dense_fraction=1.0)
            shape = (1, c, h, w)
            x = rng.standard_normal(shape).astype(np.float32)
            y, x_ref, _ = pair.run_delta(x, EMPTY, EMPTY)
            for pattern in ("scattered", "gaps", "long", "edges", "half"):
                x2 = x.copy()
                x2[:, :, _changes(shape, pattern)] += 1.0
                sentinel = np.full_like(y, 1234.5)
                y2, _, map_out = pair.run_delta(x2, x_ref.copy(), sentinel)
                marked = np.broadcast_to(map_out != 0, y2.shape)
                where = f"{(c, m, group, k, stride, h, w)} {activation or 'none'} {pattern}"
                assert marked.any() and not marked.all(), where
                np.testing.assert_array_equal(y2[~marked], sentinel[~marked], err_msg=where)
                assert_close_nan(y2[marked], pair.run_dense(x2)[marked])


@pytest.mark.sanitizer
def test_store_paths_in_this_process():
    check_store_paths()


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_store_paths_on_every_simd_variant(simd):
    check_under_simd(simd, "test_conv_stores", "check_store_paths(seed=9)")
