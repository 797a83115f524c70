"""DeltaReorder (docs/ops.md#deltareorder): X [N,C,H,W] from NCHW memory to the library's channel-blocked memory
([N][C/b][H][W][b], b = deltaonnx._native.channel_block()) or back.

It equals numpy's reorder (reference.to_blocked / from_blocked) bit for bit, NaN and infinities included, for b
forced to 16, 8, 4 and 1 (DELTAONNX_CHANNEL_BLOCK, read once per process: those cases run in a child process);
the two directions compose to the identity; DeltaReorder -> DeltaConv(layout = "blocked") -> DeltaReorder equals
the NCHW DeltaConv and dense ORT's Conv at tau 0 over a frame sequence, its state fed back blocked. Bad input is
refused with the node named: C not a multiple of b, X not 4-D, 'to' absent, of another type or another value.
The CUDA library's host code (b = 1: a device copy) runs through its emulation.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import (DOMAIN, EMPTY, ConvPair, assert_close_nan, exact_change_map, frame_sequence, marked_frames, op_model,
                      op_session, value_info)
from conftest import check_under_simd
from deltaonnx import reference as ref


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


def reorder_model(to, name="reorder_0", attrs=None):
    """One DeltaReorder X -> Y; to=None leaves the attribute out (attrs: any others, or 'to' of another type)."""
    attrs = dict(attrs or {})
    if to is not None:
        attrs["to"] = to
    node = helper.make_node("DeltaReorder", ["X"], ["Y"], domain=DOMAIN, name=name, **attrs)
    return op_model([node], [value_info("X")], [value_info("Y")])


def round_trip_model():
    nodes = [helper.make_node("DeltaReorder", ["X"], ["B"], domain=DOMAIN, name="to_blocked", to="blocked"),
             helper.make_node("DeltaReorder", ["B"], ["Y"], domain=DOMAIN, name="to_nchw", to="nchw")]
    return op_model(nodes, [value_info("X")], [value_info("Y"), value_info("B")])


def special_values(rng, shape):
    """Random floats with NaN (two payloads), +-inf, -0 and a subnormal: a reorder moves bits, it computes nothing."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    if flat.size >= 6:
        spots = rng.choice(flat.size, 6, replace=False)
        flat[spots] = [np.nan, np.inf, -np.inf, -0.0, 1e-42, np.nan]
        flat.view(np.uint32)[spots[5]] = 0x7FC12345  # a NaN with a payload
    return x


# Pixel counts: whole 16- and 8-pixel tiles with and without a tail, fewer than a tile, one; planes the engine
# splits into several tasks (1517 pixels, more than a task's 1024 at b = 16; 16900, more than 16384 at b = 1).
SHAPES = [(1, 16, 5, 7), (1, 32, 4, 8), (2, 48, 3, 1), (1, 32, 1, 1), (3, 16, 4, 9), (0, 16, 4, 4),
          (1, 32, 37, 41), (1, 16, 130, 130)]


def check_equals_numpy(shapes=SHAPES, seed=7):
    b = channel_block()
    rng = np.random.default_rng(seed)
    to_blocked, to_nchw = op_session(reorder_model("blocked")), op_session(reorder_model("nchw"))
    for shape in shapes:
        x = special_values(rng, shape)
        y = to_blocked.run(None, {"X": x})[0]
        assert y.shape == x.shape and y.dtype == np.float32
        np.testing.assert_array_equal(y.view(np.uint32), ref.to_blocked(x, b).view(np.uint32), err_msg=f"{shape} b={b}")
        back = to_nchw.run(None, {"X": x})[0]
        np.testing.assert_array_equal(back.view(np.uint32), ref.from_blocked(x, b).view(np.uint32),
                                      err_msg=f"{shape} b={b}")


def check_forced_block(block: int):
    assert channel_block() == block, "DELTAONNX_CHANNEL_BLOCK did not reach the library"
    check_equals_numpy()


def test_equals_numpy_with_the_library_block():
    check_equals_numpy()


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    """The kernel table's block_planes and unblock_activate (no activation) under each variant, the library's b."""
    check_under_simd(simd, "test_reorder", "check_equals_numpy()")


# b = 16 and 8 with each vector variant that has a path for it (AVX2 does 16 as two halves, AVX-512 leaves 8 to
# the scalar loop), 4 and 1 (a copy) on the scalar one.
@pytest.mark.parametrize("block, simd", [(16, "avx512"), (16, "avx2"), (8, "avx2"), (8, "avx512"), (4, "scalar"),
                                         (1, "scalar")])
def test_equals_numpy_with_forced_block(block, simd, monkeypatch):
    monkeypatch.setenv("DELTAONNX_CHANNEL_BLOCK", str(block))
    check_under_simd(simd, "test_reorder", f"check_forced_block({block})")


@pytest.mark.sanitizer
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_is_identity(shape, rng):
    session = op_session(round_trip_model(), threads=2)  # two threads: the per-block tasks on ORT's pool
    x = special_values(rng, shape)
    y, blocked = session.run(None, {"X": x})
    np.testing.assert_array_equal(y.view(np.uint32), x.view(np.uint32))
    if channel_block() > 1 and x.size > 0 and shape[2] * shape[3] > 1:  # one pixel: both orders are one memory
        assert not np.array_equal(blocked, x, equal_nan=True), "the blocked tensor is a copy: nothing was reordered"


def test_reference_evaluator_runs_the_op(rng):
    b = channel_block()
    x = special_values(rng, (2, 32, 3, 5))
    expected = op_session(round_trip_model()).run(None, {"X": x})
    got = ref.make_reference_evaluator(round_trip_model(), channel_block=b).run(None, {"X": x})
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))


# ---------------------------------------------------------------------------------------------------------
# DeltaReorder around a blocked DeltaConv
# ---------------------------------------------------------------------------------------------------------

def blocked_conv_chain(w, bias, attrs, with_map):
    """X (NCHW) -> DeltaReorder(blocked) -> DeltaConv(layout blocked) -> DeltaReorder(nchw) -> Y; the conv's
    state (X_ref, Y_prev) and its blocked output Yb are graph inputs/outputs, as a converted model carries them."""
    conv_inputs = ["Xb", "W", "B", "X_ref", "Y_prev"] + (["map_in"] if with_map else [])
    nodes = [helper.make_node("DeltaReorder", ["X"], ["Xb"], domain=DOMAIN, name="in_reorder", to="blocked"),
             helper.make_node("DeltaConv", conv_inputs, ["Yb", "X_ref_next", "map_out"], domain=DOMAIN, name="conv",
                              layout="blocked", **attrs),
             helper.make_node("DeltaReorder", ["Yb"], ["Y"], domain=DOMAIN, name="out_reorder", to="nchw")]
    inputs = [value_info(n) for n in ("X", "X_ref", "Y_prev")] + (
        [value_info("map_in", TensorProto.UINT8)] if with_map else [])
    outputs = [value_info(n) for n in ("Y", "Yb", "X_ref_next")] + [value_info("map_out", TensorProto.UINT8)]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(bias, "B")]
    return op_session(op_model(nodes, inputs, outputs, inits))


CHAIN_CASES = [  # (C, M, kernel, stride, pads, batch, H, W)
    (16, 32, 3, 1, [1, 1, 1, 1], 1, 13, 17),
    (32, 16, 3, 2, [1, 0, 1, 1], 2, 11, 14),
    (16, 16, 1, 1, [0, 0, 0, 0], 1, 9, 6),
]


def check_chain(seed=3):
    for C, M, k, s, pads, n, H, W in CHAIN_CASES:
        for with_map in (False, True):
            rng = np.random.default_rng(seed)
            w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
            bias = rng.standard_normal(M).astype(np.float32)
            attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads)
            chain = blocked_conv_chain(w, bias, attrs, with_map)
            nchw = ConvPair(w, bias, attrs, with_map=with_map)
            state_c, state_n, prev = (EMPTY, EMPTY), (EMPTY, EMPTY), None
            kinds = ["first", "local", "none", "nan", "local", "global", "local"]
            for kind, x in zip(kinds, frame_sequence(rng, (n, C, H, W), kinds)):
                change = exact_change_map(x, prev)
                feed = {"X": x, "X_ref": state_c[0], "Y_prev": state_c[1]}
                if with_map:
                    feed["map_in"] = change
                y, yb, x_ref, map_c = chain.run(None, feed)
                y_n, ref_n, map_n = nchw.run_delta(x, *state_n, change)
                where = f"C={C} M={M} k={k} s={s} map={with_map} b={channel_block()} frame {kind}"
                assert_close_nan(y, nchw.run_dense(x))
                assert_close_nan(y, y_n)
                np.testing.assert_array_equal(map_c, map_n, err_msg=where)
                np.testing.assert_array_equal(ref.from_blocked(x_ref, channel_block()), ref_n, err_msg=where)
                state_c, state_n, prev = (x_ref, yb), (ref_n, y_n), x


def test_chain_around_blocked_conv_equals_nchw_conv_and_dense_ort():
    check_chain()


@pytest.mark.parametrize("block", ["8", "1"])
def test_chain_with_forced_block(block):
    check_under_simd("scalar", "test_reorder", "check_chain(seed=5)", channel_block=block)


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------

def run_error(model, x) -> str:
    session = op_session(model)
    with pytest.raises(Exception) as info:
        session.run(None, {"X": x})
    return str(info.value)


def session_error(model) -> str:
    with pytest.raises(Exception) as info:
        op_session(model)
    return str(info.value)


def check_channels_not_multiple_of_block():
    """To "blocked" 8 channels pad to 16 (docs/ops.md#deltareorder); to "nchw" without `channels` X's count must be
    a multiple of b."""
    assert channel_block() == 16
    x = np.zeros((1, 8, 4, 4), np.float32)
    assert op_session(reorder_model("blocked", name="r8")).run(None, {"X": x})[0].shape == (1, 16, 4, 4)
    message = run_error(reorder_model("nchw", name="r8"), x)
    assert "DeltaReorder node 'r8'" in message, message
    assert "X has shape [1,8,4,4]" in message and "channel block 16" in message, message


def test_channels_not_multiple_of_block(monkeypatch):
    monkeypatch.setenv("DELTAONNX_CHANNEL_BLOCK", "16")
    check_under_simd("scalar", "test_reorder", "check_channels_not_multiple_of_block()")


@pytest.mark.parametrize("shape", [(16, 4, 4), (1, 16, 4, 4, 1), (16,)])
def test_not_4d_refused(shape):
    message = run_error(reorder_model("blocked", name="r3"), np.zeros(shape, np.float32))
    assert "DeltaReorder node 'r3'" in message and "X must be 4-D NCHW" in message, message


@pytest.mark.parametrize("to, attrs, expected", [
    ("nhwc", {}, "attribute 'to' must be \"blocked\" or \"nchw\", got \"nhwc\""),
    ("Blocked", {}, "attribute 'to' must be \"blocked\" or \"nchw\", got \"Blocked\""),
    (None, {}, "attribute 'to' is required"),
    (None, {"to": 1}, "attribute 'to' must be a string"),
])
def test_bad_to_refused_at_session_creation(to, attrs, expected):
    message = session_error(reorder_model(to, name="bad_to", attrs=attrs))
    assert "DeltaReorder node 'bad_to'" in message and expected in message, message


def test_reference_refuses_what_the_op_refuses():
    with pytest.raises(ValueError, match="X has 8 channels, expected 16"):
        ref.delta_reorder(np.zeros((1, 8, 2, 2), np.float32), to="nchw", block=16)
    with pytest.raises(ValueError, match="4-D"):
        ref.delta_reorder(np.zeros((8, 2, 2), np.float32), to="nchw", block=1)
    with pytest.raises(ValueError, match="'to'"):
        ref.delta_reorder(np.zeros((1, 8, 2, 2), np.float32), to="nhwc", block=1)


# ---------------------------------------------------------------------------------------------------------
# the CUDA library (b = 1) through its host emulation
# ---------------------------------------------------------------------------------------------------------

def test_emulated_cuda_reorder_is_a_copy(emulated_cuda_library, rng):
    """b = 1 on CUDA: both directions copy X (cudaMemcpyAsync on the op's stream), any channel count."""
    for to in ("blocked", "nchw"):
        session = op_session(reorder_model(to), library=emulated_cuda_library)
        for shape in [(2, 8, 3, 5), (1, 3, 1, 1), (0, 16, 2, 2)]:
            x = special_values(rng, shape)
            y = session.run(None, {"X": x})[0]
            np.testing.assert_array_equal(y.view(np.uint32), x.view(np.uint32))
    assert "attribute 'to' must be" in session_error(reorder_model("nhwc"))
    message = str(pytest.raises(Exception, op_session, reorder_model("nhwc", name="c"), library=emulated_cuda_library).value)
    assert "DeltaReorder node 'c'" in message and "attribute 'to' must be" in message, message
    session = op_session(reorder_model("blocked", name="c3"), library=emulated_cuda_library)
    message = str(pytest.raises(Exception, session.run, None, {"X": np.zeros((4, 4), np.float32)}).value)
    assert "DeltaReorder node 'c3'" in message and "X must be 4-D" in message, message
    # 'channels' (docs/ops.md#deltareorder): accepted and checked; b = 1, so roundup(C, 1) = C and nothing pads
    x = special_values(rng, (1, 24, 3, 5))
    for to in ("blocked", "nchw"):
        session = op_session(reorder_model(to, name="cc", attrs={"channels": 24}), library=emulated_cuda_library)
        np.testing.assert_array_equal(session.run(None, {"X": x})[0].view(np.uint32), x.view(np.uint32))
        session = op_session(reorder_model(to, name="cc", attrs={"channels": 20}), library=emulated_cuda_library)
        message = str(pytest.raises(Exception, session.run, None, {"X": x}).value)
        assert "DeltaReorder node 'cc'" in message and "20 channels" in message, message
    message = str(pytest.raises(Exception, op_session, reorder_model("nchw", name="c0", attrs={"channels": 0}),
                                library=emulated_cuda_library).value)
    assert "'channels' must be >= 1" in message, message


# --------------------------------------------------------------------------------------------------
# with state: Y_prev and X's change map, only the marked pixels redone
# --------------------------------------------------------------------------------------------------


def stateful_model(to):
    node = helper.make_node("DeltaReorder", ["X", "Y_prev", "map_in"], ["Y"], domain=DOMAIN, name="reorder_s", to=to)
    return op_model([node], [value_info("X"), value_info("Y_prev"), value_info("map_in", TensorProto.UINT8)],
                    [value_info("Y")])


def check_stateful(seed=5):
    """Unmarked pixels keep Y_prev (filled with values X never has, so a redone pixel shows), marked ones come from
    X, exactly as the reference; an empty or other-shaped Y_prev and an empty map redo every pixel."""
    b = channel_block()
    rng = np.random.default_rng(seed)
    for to in ("blocked", "nchw"):
        session = op_session(stateful_model(to))
        for shape in [(1, 32, 5, 7), (2, 16, 3, 4)]:
            x = special_values(rng, shape)
            y_prev = np.full(shape, 1e30, np.float32)
            marks = (rng.random((shape[0], 1, *shape[2:])) < 0.3).astype(np.uint8)
            got = session.run(None, {"X": x, "Y_prev": y_prev, "map_in": marks})[0]
            want = ref.delta_reorder(x, y_prev, marks, to=to, block=b)
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            kept = (got == 1e30).sum()
            assert kept == (marks == 0).sum() * shape[1], (to, shape)  # exactly the unmarked pixels kept Y_prev
            full = ref.delta_reorder(x, to=to, block=b)
            for feeds in ({"Y_prev": EMPTY, "map_in": marks}, {"Y_prev": y_prev[:, :, :1], "map_in": marks},
                          {"Y_prev": y_prev, "map_in": np.zeros((0, 1, 0, 0), np.uint8)}):
                np.testing.assert_array_equal(session.run(None, {"X": x, **feeds})[0].view(np.uint32),
                                              full.view(np.uint32))


def test_stateful_redoes_only_marked_pixels():
    check_stateful()


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("1", "scalar")])
def test_stateful_with_forced_block(block, simd):
    check_under_simd(simd, "test_reorder", "check_stateful(seed=9)", channel_block=block)


@pytest.mark.parametrize("to", ["blocked", "nchw"])
def test_stateful_in_place_equals_copying(to, rng):
    """docs/state_protocol.md "In place": Y bound to Y_prev's buffer; the op writes only the marked pixels."""
    import onnxruntime as ort

    session = op_session(stateful_model(to))
    shape = (1, 32, 6, 5)
    frames, maps = marked_frames(rng, shape)
    if to == "nchw":  # X is blocked memory: the pixels changed above must be the pixels changed there
        frames = [ref.to_blocked(x, channel_block()) for x in frames]
    copying, y_prev = [], EMPTY
    for x, marks in zip(frames, maps):
        y_prev = session.run(None, {"X": x, "Y_prev": y_prev, "map_in": marks})[0]
        copying.append(y_prev)
    state = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
    for t, (x, marks) in enumerate(zip(frames, maps)):
        binding = session.io_binding()
        binding.bind_cpu_input("X", x)
        binding.bind_cpu_input("map_in", marks)
        if t == 0:
            binding.bind_cpu_input("Y_prev", EMPTY)
        else:
            binding.bind_ortvalue_input("Y_prev", state)
        binding.bind_ortvalue_output("Y", state)
        session.run_with_iobinding(binding)
        np.testing.assert_array_equal(state.numpy(), copying[t], err_msg=f"frame {t}")
        np.testing.assert_array_equal(state.numpy(), ref.delta_reorder(x, to=to, block=channel_block()))


def test_stateful_map_of_another_shape_refused(rng):
    session = op_session(stateful_model("blocked"))
    x = rng.standard_normal((1, 16, 4, 4)).astype(np.float32)
    with pytest.raises(Exception, match=r"reorder_s.*map_in must be \[N,1,H,W\]"):
        session.run(None, {"X": x, "Y_prev": x, "map_in": np.ones((1, 1, 4, 3), np.uint8)})
    with pytest.raises(ValueError, match="map_in has shape"):
        ref.delta_reorder(x, x, np.ones((1, 1, 4, 3), np.uint8), to="blocked", block=channel_block())
