"""Padded channel blocks (docs/ops.md#blocked-layout): DeltaConv layout "blocked" / "blocked_out" and depthwise
with channel counts C, M that are no multiple of the channel block b. A blocked tensor of C channels holds
roundup(C, b), its pad lanes exactly zero after every run (NaN only where the pixel's real lanes are NaN: a zero
weight times NaN), however the output buffer started.

At tau 0, over frames of partial and full change (maps in and out), the op equals ORT's dense Conv and the NCHW
DeltaConv: maps and moved references exactly, Y once cropped to float tolerance; in place (past and present bound
to one buffer, which starts as NaN) equals copying bit for bit. Under the library's b and with b forced to 1, 4
and 8 (the last two on the scalar and AVX2 tables). DeltaReorder's padded round trip and `channels`, and the
errors: a blocked X of the wrong channel count, a padded output whose activation has act(0) != 0.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from builders import (EMPTY, ConvPair, assert_close_nan, assert_pad_lanes_zero, conv_model, exact_change_map,
                      frame_sequence, op_model, op_session, pool_model, run_in_place, value_info)
from conftest import check_under_simd
from deltaonnx.graph_passes.protocol import DOMAIN
from deltaonnx.reference import from_blocked, padded_channels, to_blocked

# (layout, C, M, depthwise, kernel, stride, pads, H, W): group-1 convs between the interface's channel counts (8,
# 24, 40, 72), depthwise 3x3 s1 and s2, the 3-channel stem writing a padded blocked Y, a 1x1 down to 8.
CASES = [
    ("blocked", 8, 24, False, 3, 1, [1, 1, 1, 1], 13, 17),
    ("blocked", 24, 40, False, 1, 1, [0, 0, 0, 0], 11, 19),
    ("blocked", 40, 8, False, 3, 2, [1, 1, 1, 1], 15, 14),
    ("blocked", 72, 24, False, 1, 1, [0, 0, 0, 0], 9, 12),
    ("blocked", 8, 8, False, 3, 1, [1, 1, 1, 1], 16, 16),
    ("blocked", 72, 72, True, 3, 1, [1, 1, 1, 1], 12, 13),
    ("blocked", 24, 24, True, 3, 2, [1, 1, 1, 1], 15, 18),
    ("blocked", 40, 40, True, 5, 1, [2, 2, 2, 2], 11, 10),
    ("blocked_out", 3, 24, False, 3, 2, [1, 1, 1, 1], 21, 30),
    ("blocked_out", 3, 8, False, 3, 1, [1, 1, 1, 1], 13, 17),
    ("blocked_out", 24, 40, False, 1, 1, [0, 0, 0, 0], 10, 11),
]
ACTIVATIONS = ["", "Relu", "PRelu"]  # act(0) = 0; PRelu's slopes are per channel (padded with zeros)
KINDS = ["first", "local", "none", "nan", "local", "global", "local"]


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


def make_pair(case, activation, with_map, rng, layout=None):
    layout_, C, M, depthwise, k, s, pads = case[:7]
    group = C if depthwise else 1
    w = (rng.standard_normal((M, C // group, k, k)) / np.sqrt(C // group * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads, group=group)
    delta_attrs = {"layout": layout or layout_}
    return (ConvPair(w, bias, attrs, activation, with_map=with_map),
            ConvPair(w, bias, attrs, activation, with_map=with_map, delta_attrs=delta_attrs))


def check_case(case, activation, with_map, seed):
    b = channel_block()
    layout, C, M = case[:3]
    n, H, W = 1, case[7], case[8]
    rng = np.random.default_rng(seed)
    nchw, padded = make_pair(case, activation, with_map, rng)
    blocked_in = layout == "blocked"
    frames = list(zip(KINDS, frame_sequence(rng, (n, C, H, W), KINDS)))
    state_n, state_p, prev, feeds, copying = (EMPTY, EMPTY), (EMPTY, EMPTY), None, [], []
    for kind, x in frames:
        change = exact_change_map(x, prev)
        x_in = to_blocked(x, b) if blocked_in else x
        y_n, ref_n, map_n = nchw.run_delta(x, *state_n, change)
        y_p, ref_p, map_p = padded.run_delta(x_in, *state_p, change)
        where = f"{case} {activation!r} map={with_map} b={b} frame {kind}"
        assert y_p.shape == (n, padded_channels(M, b)) + y_n.shape[2:], where
        np.testing.assert_array_equal(map_p, map_n, err_msg=where)
        assert_close_nan(from_blocked(y_p, b, M), nchw.run_dense(x))
        assert_close_nan(from_blocked(y_p, b, M), y_n)
        assert_pad_lanes_zero(y_p, b, M, f"Y, {where}")
        if blocked_in:
            np.testing.assert_array_equal(from_blocked(ref_p, b, C), ref_n, err_msg=where)
            assert_pad_lanes_zero(ref_p, b, C, f"X_ref_next, {where}")
        else:
            np.testing.assert_array_equal(ref_p, ref_n, err_msg=where)
        feeds.append((x_in, change) if with_map else x_in)
        copying.append((y_p, ref_p, map_p))
        state_n, state_p, prev = (ref_n, y_n), (ref_p, y_p), x
    # in place from buffers that start as NaN, so pad lanes nobody writes would show
    in_place = run_in_place(padded.delta, feeds, copying[0][0].shape, copying[0][1].shape, fill=np.nan,
                            names=("x", "x_ref", "y_prev", "y", "x_ref_next", "map"),
                            map_name="map_in" if with_map else None)
    for t, (got, want) in enumerate(zip(in_place, copying)):
        for name, g, w in zip(("Y", "X_ref_next", "map_out"), got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"in place, frame {t} ({frames[t][0]}): {name}, {case}")


def check_all_cases(seed=3):
    for i, case in enumerate(CASES):
        for activation in ACTIVATIONS:
            for with_map in (False, True):
                check_case(case, activation, with_map, seed + i)
    check_reorders()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}{'-dw' if c[3] else ''}")
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_padded_conv_equals_dense_ort_and_nchw_op(case, activation):
    for with_map in (False, True):
        check_case(case, activation, with_map, seed=5)


@pytest.mark.parametrize("block, simd", [("1", "scalar"), ("4", "scalar"), ("8", "avx2"), ("8", "scalar"),
                                         ("16", "avx512")])
def test_forced_channel_block(block, simd):
    """b = 1, 4, 8 and 16 whatever the machine's b (the NCHWc dense path only where b is MLAS's)."""
    check_under_simd(simd, "test_blocked_padded", "check_all_cases(seed=13)", channel_block=block)


# ---- DeltaPool -------------------------------------------------------------------------------------------

def test_pool_of_padded_blocks_pools_zero_pad_lanes(rng):
    """DeltaPool needs no logical C: a padded X's pad lanes pool zeros; cropped, Y is ORT's MaxPool."""
    b = channel_block()
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    blocked = op_session(pool_model(dict(attrs, layout="blocked"), with_map=True))
    dense = op_session(op_model([helper.make_node("MaxPool", ["X"], ["Y"], **attrs)], [value_info("X")],
                                [value_info("Y")]), custom=False)
    state, prev = (EMPTY, EMPTY), None
    kinds = [k for k in KINDS if k != "nan"]  # ORT's MaxPool drops a NaN the op keeps (docs/ops.md, DeltaPool)
    for kind, x in zip(kinds, frame_sequence(rng, (1, 24, 15, 18), kinds)):
        y, ref_next, _ = blocked.run(None, {"X": to_blocked(x, b), "X_ref": state[0], "Y_prev": state[1],
                                            "map_in": exact_change_map(x, prev)})
        np.testing.assert_array_equal(from_blocked(y, b, 24), dense.run(None, {"X": x})[0], err_msg=kind)
        assert_pad_lanes_zero(y, b, 24, f"pool Y, frame {kind}")
        state, prev = (ref_next, y), x


# ---- DeltaReorder ------------------------------------------------------------------------------------------

def reorder_model(to, channels=None, with_state=False):
    attrs = {"to": to} if channels is None else {"to": to, "channels": channels}
    inputs = ["X"] + (["Y_prev", "map_in"] if with_state else [])
    node = helper.make_node("DeltaReorder", inputs, ["Y"], domain=DOMAIN, name="reorder_0", **attrs)
    ins = [value_info("X")] + ([value_info("Y_prev"), value_info("map_in", TensorProto.UINT8)] if with_state else [])
    return op_model([node], ins, [value_info("Y")])


def check_reorders(seed=7):
    b = channel_block()
    rng = np.random.default_rng(seed)
    for c in (3, 8, 24, 40, 72):
        x = rng.standard_normal((2, c, 5, 67)).astype(np.float32)  # 67 pixels a row: every SIMD tail
        blocked = op_session(reorder_model("blocked", c)).run(None, {"X": x})[0]
        np.testing.assert_array_equal(blocked, to_blocked(x, b), err_msg=f"C={c} to blocked")
        unblocked = op_session(reorder_model("nchw", c)).run(None, {"X": blocked})[0]
        np.testing.assert_array_equal(unblocked, x, err_msg=f"C={c} round trip")
        # without channels: to "blocked" pads X's count; to "nchw" keeps every (padded) channel
        np.testing.assert_array_equal(op_session(reorder_model("blocked")).run(None, {"X": x})[0], blocked)
        np.testing.assert_array_equal(op_session(reorder_model("nchw")).run(None, {"X": blocked})[0],
                                      from_blocked(blocked, b))
        # with a map: the marked pixels redone, the others Y_prev's (of Y's shape; X holds there what Y_prev was
        # made from, the map's promise), both directions, copying and in place
        for to in ("blocked", "nchw"):
            session = op_session(reorder_model(to, c, with_state=True))
            as_x = (lambda v: v) if to == "blocked" else (lambda v: to_blocked(v, b))
            as_y = (lambda v: to_blocked(v, b)) if to == "blocked" else (lambda v: v)
            old = rng.standard_normal(x.shape).astype(np.float32)
            for marked in (0.1, 0.9, 1.0):
                marks = (rng.random((2, 1, 5, 67)) < marked).astype(np.uint8)
                now = np.where(marks != 0, x, old)
                got = session.run(None, {"X": as_x(now), "Y_prev": as_y(old), "map_in": marks})[0]
                np.testing.assert_array_equal(got, as_y(now), err_msg=f"C={c} to {to} marked {marked}")
                y_state = ort.OrtValue.ortvalue_from_numpy(as_y(old))
                binding = session.io_binding()
                binding.bind_cpu_input("X", as_x(now))
                binding.bind_ortvalue_input("Y_prev", y_state)
                binding.bind_cpu_input("map_in", marks)
                binding.bind_ortvalue_output("Y", y_state)
                session.run_with_iobinding(binding)
                np.testing.assert_array_equal(y_state.numpy(), got, err_msg=f"C={c} to {to} in place")


def test_reorder_round_trip_with_channels():
    check_reorders()


@pytest.mark.parametrize("block, simd", [("4", "scalar"), ("8", "avx2"), ("16", "avx512"), ("16", "scalar")])
def test_reorder_forced_block(block, simd):
    check_under_simd(simd, "test_blocked_padded", "check_reorders()", channel_block=block)


# ---- errors ------------------------------------------------------------------------------------------------

def test_reorder_channel_mismatch_names_the_node(rng):
    b = channel_block()
    x = rng.standard_normal((1, 24, 3, 3)).astype(np.float32)
    with pytest.raises(Exception, match=r"DeltaReorder node 'reorder_0'.*channels"):
        op_session(reorder_model("blocked", 23)).run(None, {"X": x})
    if b > 1:
        with pytest.raises(Exception, match=r"DeltaReorder node 'reorder_0'.*roundup"):
            op_session(reorder_model("nchw", 24)).run(None, {"X": x[:, :padded_channels(24, b) - 1]})
    with pytest.raises(Exception, match="'channels' must be >= 1"):
        op_session(reorder_model("nchw", 0))


def test_blocked_x_of_the_wrong_channel_count_names_the_node(rng):
    b = channel_block()
    if b == 1:
        pytest.skip("b = 1: nothing pads")
    w = rng.standard_normal((8, 24, 1, 1)).astype(np.float32)
    session = op_session(conv_model(dict(layout="blocked"), W=w))
    x = rng.standard_normal((1, 24, 4, 4)).astype(np.float32)  # NCHW 24: the blocked X holds roundup(24, b)
    with pytest.raises(Exception, match=rf"DeltaConv node 'delta_conv_0'.*roundup\(24, {b}\) = {padded_channels(24, b)}"):
        session.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})
    y = session.run(None, {"X": to_blocked(x, b), "X_ref": EMPTY, "Y_prev": EMPTY})[0]
    assert y.shape == (1, padded_channels(8, b), 4, 4)


@pytest.mark.parametrize("activation, params", [("Sigmoid", []), ("HardSigmoid", [0.2, 0.5]), ("Clip", [0.5, 6.0]),
                                                ("SiLU", None)])
@pytest.mark.parametrize("layout", ["blocked", "blocked_out"])
def test_padded_output_with_act_of_zero_not_zero_is_refused(activation, params, layout, rng):
    """Pad lanes hold act(0 + 0): refused at session creation where that is not 0 (SiLU's is 0: accepted)."""
    b = channel_block()
    if b == 1:
        pytest.skip("b = 1: nothing pads")
    M = b + b // 2 if b > 1 else 3
    w = rng.standard_normal((M, 8, 1, 1)).astype(np.float32)
    attrs = dict(layout=layout, activation=activation, **({"activation_params": params} if params else {}))
    if params is None:
        op_session(conv_model(attrs, W=w))
        return
    with pytest.raises(Exception, match=r"DeltaConv node 'delta_conv_0'.*pads .* act\(0\)"):
        op_session(conv_model(attrs, W=w))
    op_session(conv_model(attrs, W=rng.standard_normal((2 * b, 8, 1, 1)).astype(np.float32)))  # unpadded: fine
