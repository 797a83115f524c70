"""A depthwise DeltaConv (group = C = M) with layout = "blocked" (docs/ops.md#blocked-layout): X, X_ref, Y, Y_prev
hold [N][C/b][H][W][b] memory; an output's block cb reads its window's block cb alone (kernel_table.h
blocked_depthwise_pixels), an item recomputed everywhere runs ORT's NCHWc depthwise Conv on the tensors as they are.

At tau 0 a sequence of frames through the blocked op equals ORT's dense Conv and the NCHW DeltaConv on the same
frames, its maps and moved reference exactly the NCHW op's (items recomputed everywhere, where b is MLAS's block, bit
for bit dense ORT's, as the blocked kernel sums in MLAS's order); at tau > 0 it equals the numpy reference (Y, X_ref_next and map_out). Each case runs under every
SIMD variant and with b forced to 8 and 1.
"""
from __future__ import annotations

import numpy as np
import pytest

from onnx import TensorProto, helper

from builders import (EMPTY, ConvPair, assert_close_nan, conv_model, exact_change_map, frame_sequence, op_model,
                      op_session, value_info)
from conftest import check_under_simd
from deltaonnx import reference
from deltaonnx.graph_passes.protocol import DOMAIN
from deltaonnx.reference import from_blocked, to_blocked
from test_blocked_layout import channel_block, compare_blocked_with_nchw


# (C, kernel, stride, dilation, pads, batch, H, W): 3x3 and 5x5 at strides 1 and 2, a dilation with asymmetric pads,
# no padding (every window inside), batch 2; odd sizes so rows and columns end at either parity. C: multiples of 16.
CASES = [
    (32, 3, 1, 1, [1, 1, 1, 1], 1, 19, 26),
    (64, 3, 2, 1, [1, 1, 1, 1], 2, 21, 34),
    (16, 5, 1, 1, [2, 2, 2, 2], 1, 17, 23),
    (48, 5, 2, 1, [2, 2, 2, 2], 1, 23, 19),
    (16, 3, 1, 2, [2, 1, 0, 2], 2, 13, 15),
    (32, 3, 1, 1, [0, 0, 0, 0], 1, 12, 19),
]
ACTIVATIONS = ["", "Relu", "Clip", "HardSwish", "SiLU", "PRelu"]  # Clip: Relu6; PRelu lane by lane
KINDS = ["first", "local", "none", "nan", "local", "global", "local"]


def _pair(case, activation, with_map, rng, threshold=0.0):
    C, k, s, d, pads = case[:5]
    w = (rng.standard_normal((C, 1, k, k)) / k).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], dilations=[d, d], pads=pads, group=C)
    nchw = ConvPair(w, bias, attrs, activation, with_map=with_map, threshold=threshold)
    blocked = ConvPair(w, bias, attrs, activation, with_map=with_map, threshold=threshold,
                       delta_attrs={"layout": "blocked"})
    return nchw, blocked


def partial_frames(rng, shape):
    """Partial frames: a few compact regions (one at a corner, one on an edge) plus scattered single pixels; a
    frame of scattered pixels alone; one with a NaN inside a region."""
    n, c, h, w = shape
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [("first", x)]
    for scattered in (0, 5, 17, 40):
        x = x.copy()
        if scattered != 40:
            for y0, x0 in ((0, 0), (h // 2, w - 3), (rng.integers(0, h - 3), rng.integers(0, w - 4))):
                x[:, :, y0:y0 + 3, x0:x0 + 4] += 1.0
        where = rng.choice(h * w, size=min(scattered, h * w), replace=False)
        x[:, :, where // w, where % w] -= 0.75
        frames.append((f"regions + {scattered} pixels", x))
    x = x.copy()
    x[:, :, h - 4:h, 2:7] += 0.5
    x[0, c - 1, h - 2, 4] = np.nan
    frames.append(("nan", x))
    return frames


def check_case(case, activation, with_map, seed, frames=None, all_ones_map=False):
    """The blocked op against dense ORT and the NCHW op at tau 0 (test_blocked_layout.compare_blocked_with_nchw;
    bit for bit on first and all-new frames: ORT's NCHWc depthwise Conv on the blocked tensors, and the partial
    engine too, which sums as MLAS does, so equality does not tell which ran: the dense path is shown by its cost,
    docs/results.md). all_ones_map: every frame's map marks every pixel."""
    rng = np.random.default_rng(seed)
    nchw, blocked = _pair(case, activation, with_map, rng)
    C, n, H, W = case[0], case[5], case[6], case[7]
    if frames is None:
        frames = list(zip(KINDS, frame_sequence(rng, (n, C, H, W), KINDS)))
    compare_blocked_with_nchw(nchw, blocked, frames, activation,
                              f"{case} {activation!r} map={with_map} ones={all_ones_map}", all_ones_map)


def check_against_reference(case, activation, seed, threshold=0.3):
    """tau > 0: the blocked op's Y, X_ref_next and map_out equal the numpy reference's on blocked memory."""
    b = channel_block()
    rng = np.random.default_rng(seed)
    _, blocked = _pair(case, activation, True, rng, threshold=threshold)
    C, n, H, W = case[0], case[5], case[6], case[7]
    state, prev = (EMPTY, EMPTY), None
    for kind, x in partial_frames(rng, (n, C, H, W)):
        xb = to_blocked(x, b)
        change = exact_change_map(x, prev)
        y, ref, map_out = blocked.run_delta(xb, *state, change)
        y_r, ref_r, map_r = reference.delta_conv(
            xb, blocked.w, blocked.b, None if state[0] is EMPTY else state[0], None if state[1] is EMPTY else state[1],
            change, activation=activation, activation_params=blocked.act_params, threshold=threshold,
            layout="blocked", channel_block=b, **blocked.attrs)
        where = f"{case} {activation!r} tau={threshold} b={b} frame {kind}"
        np.testing.assert_array_equal(map_out, map_r, err_msg=where)
        np.testing.assert_array_equal(ref, ref_r, err_msg=where)
        assert_close_nan(y, y_r)
        state, prev = (ref, y), x


def check_all(seed=5):
    for i, case in enumerate(CASES):
        for activation in ACTIVATIONS:
            check_case(case, activation, True, seed + i)
        C, n, H, W = case[0], case[5], case[6], case[7]
        for activation in ("Clip", "SiLU"):
            check_case(case, activation, True, seed + i, partial_frames(np.random.default_rng(seed + i), (n, C, H, W)))
        check_case(case, "HardSwish", False, seed + i)
        check_case(case, "Relu", True, seed + i, all_ones_map=True)
        check_against_reference(case, "HardSwish", seed + i)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_blocked_depthwise_equals_dense_ort_and_nchw_op(case, activation):
    check_case(case, activation, True, seed=3)
    check_case(case, activation, False, seed=3)


@pytest.mark.parametrize("case", CASES)
def test_partial_frames_and_all_ones_maps(case):
    C, n, H, W = case[0], case[5], case[6], case[7]
    for activation in ("", "Clip", "PRelu"):
        check_case(case, activation, True, 4, partial_frames(np.random.default_rng(4), (n, C, H, W)))
    check_case(case, "SiLU", True, 4, all_ones_map=True)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ["Relu", "PRelu"])
def test_threshold_equals_reference(case, activation):
    check_against_reference(case, activation, seed=6)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_blocked_depthwise", "check_all(seed=11)")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "scalar"), ("1", "scalar")])
def test_forced_channel_block(block, simd):
    """b = 8 (AVX2's block, its vector kernel) and b = 1 (the NCHW engine) on any machine; the NCHWc dense path
    is off where b is not MLAS's block."""
    check_under_simd(simd, "test_blocked_depthwise", "check_all(seed=13)", channel_block=block)


def test_weights_given_at_run_time(rng):
    """W a graph input (blocked per run, and checked then: a channel multiplier is refused when it runs)."""
    b = channel_block()
    C, H, W = 32, 11, 14
    node = helper.make_node("DeltaConv", ["X", "W", "", "X_ref", "Y_prev"], ["Y", "X_ref_next", "map_out"],
                            domain=DOMAIN, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=C,
                            activation="Relu", layout="blocked")
    inputs = [value_info(n) for n in ("X", "W", "X_ref", "Y_prev")]
    outputs = [value_info("Y"), value_info("X_ref_next"), value_info("map_out", TensorProto.UINT8)]
    session = op_session(op_model([node], inputs, outputs))
    w = rng.standard_normal((C, 1, 3, 3)).astype(np.float32)
    dense = ConvPair(w, None, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=C), "Relu")
    state = (EMPTY, EMPTY)
    for x in frame_sequence(rng, (1, C, H, W), ["first", "local", "local"]):
        y, ref, _ = session.run(None, {"X": to_blocked(x, b), "W": w, "X_ref": state[0], "Y_prev": state[1]})
        assert_close_nan(from_blocked(y, b), dense.run_dense(x))
        state = (ref, y)
    with pytest.raises(Exception, match="needs group = 1 or a depthwise conv"):
        session.run(None, {"X": to_blocked(x, b), "W": np.zeros((2 * C, 1, 3, 3), np.float32), "X_ref": EMPTY,
                           "Y_prev": EMPTY})


def _session_error(attrs, C=16, M=16, group=16):
    w = np.zeros((M, C // group, 3, 3), np.float32)
    with pytest.raises(Exception) as info:
        op_session(conv_model(dict(kernel_shape=[3, 3], group=group, **attrs), W=w))
    return str(info.value)


@pytest.mark.parametrize("attrs, C, M, group, message", [
    (dict(layout="blocked"), 16, 16, 2, "needs group = 1 or a depthwise conv (group = C = M"),
    (dict(layout="blocked"), 16, 32, 16, "needs group = 1 or a depthwise conv (group = C = M"),  # multiplier 2
    (dict(layout="blocked_out"), 16, 16, 16, "\"blocked_out\" needs group = 1"),
])
def test_refused_grouped_convs(attrs, C, M, group, message):
    assert message in _session_error(attrs, C, M, group)


def check_refused_at_any_block():
    assert "needs group = 1 or a depthwise conv" in _session_error(dict(layout="blocked"), 16, 16, 2)


@pytest.mark.parametrize("block", ["1", "8"])
def test_refused_whatever_the_block(block):
    """b = 1 runs "blocked" as NCHW, but a grouped conv that is not depthwise is refused all the same."""
    check_under_simd("scalar", "test_blocked_depthwise", "check_refused_at_any_block()", channel_block=block)


def test_reference_refuses_as_the_op():
    x = np.zeros((1, 16, 5, 5), np.float32)
    with pytest.raises(ValueError, match="needs group = 1 or a depthwise conv"):
        reference.delta_conv(x, np.zeros((16, 8, 3, 3), np.float32), group=2, layout="blocked", channel_block=8)
    with pytest.raises(ValueError, match='"blocked_out" needs group = 1, got group 16'):
        reference.delta_conv(x, np.zeros((16, 1, 3, 3), np.float32), group=16, layout="blocked_out", channel_block=8)
