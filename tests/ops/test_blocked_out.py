"""DeltaConv with layout = "blocked_out" (docs/ops.md#blocked-layout): X and X_ref NCHW, Y and Y_prev blocked
([N][M/b][H][W][b] under their 4-D shape), so a backbone's first conv (3 input channels, reading the frame) writes
its blocked region's memory itself instead of a DeltaReorder after it.

At tau 0 a sequence of frames through the blocked_out op equals ORT's dense Conv and the NCHW DeltaConv: maps and
moved references (NCHW) exactly, Y once unblocked to float tolerance. Partial recomputes above half the output
(dense_fraction 1) check that only the recomputed pixels reach Y. Each case runs under every SIMD variant and with
b forced to 8 and 1, where the NCHWc dense path is off.
"""
from __future__ import annotations

import numpy as np
import pytest

from builders import EMPTY, ConvPair, assert_close_nan, conv_model, exact_change_map, frame_sequence, op_session, \
    pool_model
from conftest import check_under_simd
from deltaonnx import reference
from deltaonnx.reference import from_blocked

# (C, M, kernel, stride, pads, batch, H, W): the YOLOv8 stem (3 -> 16, 3x3 s2), C < b read directly by ORT's NCHWc
# Conv, C a multiple of 16 (ReorderInput), C = 24, 18 and 72 (no multiple of 16: at b = 16 our NCHW engine, the
# padded NCHWc Conv wasting too many lanes, or for 18 refused by ORT's ReorderInput), a 1x1, batch 2.
CASES = [
    (3, 16, 3, 2, [1, 1, 1, 1], 1, 21, 30),
    (3, 32, 3, 1, [1, 1, 1, 1], 2, 13, 17),
    (16, 32, 3, 2, [1, 1, 1, 1], 1, 15, 22),
    (24, 16, 3, 1, [0, 1, 1, 0], 1, 11, 14),
    (18, 20, 3, 2, [1, 1, 1, 1], 1, 13, 10),
    (72, 40, 1, 1, [0, 0, 0, 0], 1, 7, 9),
    (5, 48, 1, 1, [0, 0, 0, 0], 1, 9, 19),
]
ACTIVATIONS = ["", "SiLU", "PRelu"]
KINDS = ["first", "local", "none", "nan", "local", "global", "local"]


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


def check_case(case, activation, with_map, dense_fraction, seed):
    b = channel_block()
    C, M, k, s, pads, n, H, W = case
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads)
    nchw = ConvPair(w, bias, attrs, activation, with_map=with_map, dense_fraction=dense_fraction)
    out = ConvPair(w, bias, attrs, activation, with_map=with_map, dense_fraction=dense_fraction,
                   delta_attrs={"layout": "blocked_out"})
    state_n, state_o, prev = (EMPTY, EMPTY), (EMPTY, EMPTY), None
    frames = list(zip(KINDS, frame_sequence(rng, (n, C, H, W), KINDS)))
    most = frames[-1][1].copy()
    most[:, :, : (7 * H) // 10] += 1.0  # most of the output but not all: a partial recompute above half
    frames.append(("most", most))
    for kind, x in frames:
        change = exact_change_map(x, prev)
        y_n, ref_n, map_n = nchw.run_delta(x, *state_n, change)
        y_o, ref_o, map_o = out.run_delta(x, *state_o, change)
        where = f"{case} {activation!r} map={with_map} dense_fraction={dense_fraction} b={b} frame {kind}"
        np.testing.assert_array_equal(map_o, map_n, err_msg=where)
        np.testing.assert_array_equal(ref_o, ref_n, err_msg=where)  # X_ref stays NCHW
        assert_close_nan(from_blocked(y_o, b, M), nchw.run_dense(x))
        assert_close_nan(from_blocked(y_o, b, M), y_n)
        expected = reference.delta_conv(x, w, bias, *state_o, change if with_map else None, kernel_shape=[k, k],
                                        strides=[s, s], pads=pads, activation=activation,
                                        activation_params=out.act_params, dense_fraction=dense_fraction,
                                        layout="blocked_out", channel_block=b)
        assert_close_nan(y_o, expected[0])
        np.testing.assert_array_equal(map_o, expected[2], err_msg=where)
        state_n, state_o, prev = (ref_n, y_n), (ref_o, y_o), x


def check_all_cases(seed=5):
    for i, case in enumerate(CASES):
        for activation in ACTIVATIONS:
            for with_map, dense_fraction in ((False, 0.5), (True, 0.5), (False, 1.0)):
                check_case(case, activation, with_map, dense_fraction, seed + i)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_map, dense_fraction", [(False, 0.5), (True, 0.5), (False, 1.0)])
def test_blocked_out_equals_dense_ort_and_nchw_op(case, activation, with_map, dense_fraction):
    check_case(case, activation, with_map, dense_fraction, seed=3)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_blocked_out", "check_all_cases(seed=11)")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("1", "scalar")])
def test_forced_channel_block(block, simd):
    """b = 8 and b = 1 on any machine: the NCHWc dense path off, the NCHW engine writes every item."""
    check_under_simd(simd, "test_blocked_out", "check_all_cases(seed=13)", channel_block=block)


def test_pool_refuses_blocked_out():
    with pytest.raises(Exception, match="'layout' must be \"nchw\" or \"blocked\", got \"blocked_out\""):
        op_session(pool_model(dict(kernel_shape=[2, 2], layout="blocked_out")))


def test_emulated_cuda_runs_blocked_out_as_nchw(emulated_cuda_library, rng):
    """The CUDA library's b is 1: "blocked_out" is accepted and runs as NCHW, equal to its NCHW op."""
    w = (rng.standard_normal((16, 3, 3, 3)) / 5).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], activation="SiLU")
    nchw = op_session(conv_model(attrs, W=w), library=emulated_cuda_library)
    out = op_session(conv_model(dict(attrs, layout="blocked_out"), W=w), library=emulated_cuda_library)
    state_n, state_o = (EMPTY, EMPTY), (EMPTY, EMPTY)
    for x in frame_sequence(rng, (1, 3, 13, 18), ["first", "local", "none", "global"]):
        got_n = nchw.run(None, {"X": x, "X_ref": state_n[0], "Y_prev": state_n[1]})
        got_o = out.run(None, {"X": x, "X_ref": state_o[0], "Y_prev": state_o[1]})
        for g, e in zip(got_o, got_n):
            np.testing.assert_array_equal(g, e)
        state_n, state_o = (got_n[1], got_n[0]), (got_o[1], got_o[0])
