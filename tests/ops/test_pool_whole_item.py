"""DeltaPool's whole item on blocked lines (the kernel table's blocked_max_pool, ops/common/blocked_pool_lines.h):
an item recomputed everywhere (a first frame, or a map marking every pixel, as when everything changes) is pooled
by a plain max with the NaN carried beside it, directly or separably, with no runs planned.

On every window shape the pool tests use, with and without X_ref (convert drops it at tau 0 with a map), the output
equals dense ORT's MaxPool bit for bit on frames without NaN, and docs/design.md#deltapool's rules hold where ORT has
none: NaN wherever a window reads a NaN (NaN at corners, edges and inside, in the first, middle and last lane of a
line), the lowest float for a window of -inf or wholly in the padding, +inf winning over numbers, NaN over +inf
(numpy reference, reference.maxpool2d). Each runs under every SIMD variant, and with b forced to 8 where the AVX-512
variant hands the block to the scalar kernel."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import test_pool_engine_speedpaths as speedpaths
from builders import DOMAIN, EMPTY, op_model, op_session, value_info
from conftest import check_under_simd
from deltaonnx import reference as ref
from test_blocked_pool import channel_block

LOWEST = np.finfo(np.float32).min

# The speed-path shapes at 16/32 channels, the zoo's pools (resnet18_like's stem pool, cnn1's 2x2 s2, yolov8_like's
# SPPF) at small sizes, and windows that leave the input: a pad as large as the kernel allows, a window wider than
# the input.
CASES = [(name, attrs, (n, 32 if c > 16 else 16, h, w)) for name, attrs, (n, c, h, w) in speedpaths.CASES] + [
    ("resnet stem 3x3 s2 p1", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (1, 16, 28, 30)),
    ("cnn1 2x2 s2", dict(kernel_shape=[2, 2], strides=[2, 2]), (1, 32, 16, 16)),
    ("yolov8 sppf 5x5 s1 p2", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 32, 10, 10)),
    ("3x3 s1 p2 (pads near the kernel)", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2]), (1, 16, 5, 7)),
    ("window wider than the input", dict(kernel_shape=[3, 9], pads=[1, 4, 1, 4]), (1, 16, 6, 3)),
    ("11x11 s1 p5: chunks of taps", dict(kernel_shape=[11, 11], pads=[5, 5, 5, 5]), (1, 16, 9, 12)),
]


def sessions(attrs, dropped):
    """Dense ORT's MaxPool and the blocked DeltaPool; dropped: no X_ref (tau 0 with a map, as convert writes it)."""
    dense = op_session(op_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [value_info("x")],
                                [value_info("y")]), custom=False)
    ins = ["x", "" if dropped else "x_ref", "y_prev", "map_in"]
    outs = ["y", "" if dropped else "x_ref_next", "map"]
    node = helper.make_node("DeltaPool", ins, outs, domain=DOMAIN, name="pool", layout="blocked", **attrs)
    vis = [value_info(n) for n in ins[:3] if n] + [value_info("map_in", TensorProto.UINT8)]
    outs_vi = [value_info(n) for n in outs[:2] if n] + [value_info("map", TensorProto.UINT8)]
    return dense, op_session(op_model([node], vis, outs_vi))


def special_frames(rng, shape, b):
    """Frames whose every pixel differs from the last: plain numbers, then NaN at corners, edges and the middle in
    the first, middle and last lane of a line, then -inf over whole windows with +inf and a NaN beside +inf."""
    n, c, h, w = shape
    plain = rng.standard_normal(shape).astype(np.float32)
    nan = rng.standard_normal(shape).astype(np.float32)
    lanes = [0, b // 2, b - 1, c - 1]
    for i, (y, x) in enumerate([(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0), (h // 2, w // 2), (0, w // 2),
                                (h // 2, 0), (h - 1, w // 3)]):
        nan[0, (lanes[i % len(lanes)] + (i // len(lanes)) * b) % c, y, x] = np.nan
    inf = rng.standard_normal(shape).astype(np.float32)
    inf[0, :, : max(1, h // 2), : max(1, w // 2)] = -np.inf
    inf[0, 1, h - 1, w - 1] = np.inf
    inf[0, 2, h // 2, w - 1] = np.inf
    inf[0, 2, h - 1, w - 1] = np.nan
    return [plain, nan, inf, plain + 1.0]


def check_case(attrs, shape, dropped, seed):
    b = channel_block()
    rng = np.random.default_rng(seed)
    dense, delta = sessions(attrs, dropped)
    state = {}
    for step, x in enumerate(special_frames(rng, shape, b)):
        feed = {"x": ref.to_blocked(x, b), "y_prev": state.get("y", EMPTY),
                "map_in": np.ones((shape[0], 1) + shape[2:], np.uint8)}  # every pixel changed: the whole item
        if not dropped:
            feed["x_ref"] = state.get("x_ref", EMPTY)
        got = delta.run(None, feed)
        y = ref.from_blocked(got[0], b)
        where = f"{attrs} {shape} dropped={dropped} b={b} frame {step}"
        assert got[-1].all(), where  # every output recomputed
        want = ref.maxpool2d(x, **attrs)  # the contract: NaN kept, the lowest float at least
        assert np.array_equal(np.isnan(y), np.isnan(want)), where
        np.testing.assert_array_equal(y, want, err_msg=where)  # NaN matches NaN
        ort = dense.run(None, {"x": x})[0]
        if not np.isnan(x).any() and not np.isneginf(x).any():
            np.testing.assert_array_equal(y, ort, err_msg=where)  # bit for bit where ORT has one rule
        else:
            clean = ~np.isnan(want) & (want > LOWEST)  # windows with a NaN or only -inf follow the contract above
            np.testing.assert_array_equal(y[clean], ort[clean], err_msg=where)
        state = {"y": got[0]} if dropped else {"y": got[0], "x_ref": got[1]}


def check_all(seed=21):
    for i, (_, attrs, shape) in enumerate(CASES):
        for dropped in (True, False):
            check_case(attrs, shape, dropped, seed + i)


def check_forced_block(block: int):
    assert channel_block() == block, "DELTAONNX_CHANNEL_BLOCK did not reach the library"
    check_all(seed=29)


@pytest.mark.sanitizer
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dropped", [True, False], ids=["dropped reference", "with X_ref"])
def test_whole_item_equals_dense_ort_and_keeps_nan(case, dropped):
    check_case(case[1], case[2], dropped, seed=7)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_pool_whole_item", "check_all()")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "avx512"), ("4", "scalar")])
def test_forced_channel_block(block, simd):
    check_under_simd(simd, "test_pool_whole_item", f"check_forced_block({block})", channel_block=block)
