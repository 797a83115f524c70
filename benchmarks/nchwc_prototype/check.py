"""Checks the NCHW16c prototype against its numpy reference: two steps (everything, then a marked subset with
changes above and below tau and a NaN), on the scalar and both AVX-512 variants (tiles, indirect), with and without SiLU.

    python benchmarks/nchwc_prototype/check.py        (also run by tests/ops/test_nchwc_prototype.py)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import partial_conv as pc  # noqa: E402

# (C, M, k, stride, H, W): YOLOv8n's kinds of layer at reduced size, and odd sizes for the borders
SHAPES = [(16, 32, 3, 2, 21, 26), (32, 32, 3, 1, 17, 19), (64, 64, 1, 1, 12, 15), (64, 128, 3, 2, 14, 11),
          (16, 16, 3, 1, 1, 1), (48, 16, 5, 1, 9, 10)]


def two_frames(C, H, W, tau, rng):
    x0 = rng.standard_normal((1, C, H, W)).astype(np.float32)
    changed = rng.random((H, W)) < 0.2
    x1 = x0 + rng.uniform(-tau, tau, x0.shape).astype(np.float32) * 0.9  # below tau: must not move the reference
    x1[0][:, changed] = rng.standard_normal((C, int(changed.sum()))).astype(np.float32)
    map_in = (changed | (rng.random((H, W)) < 0.3)).astype(np.uint8)  # a superset of the changes, as rule 4 gives
    if H * W > 4:
        iy, ix = np.argwhere(~changed & (map_in == 0))[0] if (~changed & (map_in == 0)).any() else (0, 0)
        x1[0, 1, iy, ix] = np.nan  # unmarked: the map says it did not change, so it must be ignored
        jy, jx = np.argwhere(map_in == 1)[-1]
        x1[0, C - 1, jy, jx] = np.nan  # marked: NaN counts as changed (pixel rule NOT(<= tau))
    return x0, x1, map_in


def run_case(shape, variant, tau, act, rng):
    C, M, k, s, H, W = shape
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    conv = pc.PartialConv(w, b, H, W, s, act)
    x_ref, y, map_out = conv.new_state()
    x0, x1, map_in = two_frames(C, H, W, tau, rng)
    ones = np.ones((H, W), np.uint8)
    conv.step(pc.to_blocked(x0), x_ref, ones, y, map_out, tau, variant)
    ref_x, ref_y, ref_map = pc.reference_step(x0, np.zeros_like(x0), ones, np.zeros((1, M, *map_out.shape),
                                                                                      np.float32), w, b, s, tau, act)
    np.testing.assert_array_equal(map_out, ref_map)
    np.testing.assert_allclose(pc.from_blocked(y), ref_y, rtol=1e-4, atol=1e-4)
    conv.step(pc.to_blocked(x1), x_ref, map_in, y, map_out, tau, variant)
    ref_x, ref_y, ref_map = pc.reference_step(x1, ref_x, map_in, ref_y, w, b, s, tau, act)
    np.testing.assert_array_equal(map_out, ref_map)
    np.testing.assert_array_equal(pc.from_blocked(x_ref), ref_x)
    got = pc.from_blocked(y)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref_y))
    np.testing.assert_allclose(got, ref_y, rtol=1e-4, atol=1e-4)
    return pc.from_blocked(y), pc.from_blocked(x_ref), map_out


def check_all():
    variants = list(pc.VARIANTS) if pc.has_avx512() else ["scalar"]
    for shape in SHAPES:
        for tau in (0.0, 0.3):
            for act in (False, True):
                outs = {}
                for variant in variants:
                    outs[variant] = run_case(shape, variant, tau, act, np.random.default_rng(hash((shape, tau)) % 2**32))
                # the vector kernel fmas in the scalar reference's order: equal but for the SiLU's exp
                for variant in variants[1:]:  # fma in the scalar reference's order: equal but for the SiLU's exp
                    y0, y1 = outs["scalar"][0], outs[variant][0]
                    if act:
                        np.testing.assert_allclose(y1, y0, rtol=2e-6, atol=1e-6)
                    else:
                        np.testing.assert_array_equal(y1, y0)
                    np.testing.assert_array_equal(outs["scalar"][1], outs[variant][1])
                    np.testing.assert_array_equal(outs["scalar"][2], outs[variant][2])
    return len(SHAPES) * 4 * len(variants)


if __name__ == "__main__":
    print(f"{check_all()} cases equal to the numpy reference")
