"""DeltaPool with layout = "blocked" (docs/ops.md#blocked-layout): X, X_ref, Y, Y_prev hold [N][C/b][H][W][b]
memory under their 4-D shape, b the library's channel block (deltaonnx._native.channel_block()).

Over frame sequences the blocked op, its tensors blocked and unblocked here in numpy, equals the NCHW DeltaPool bit
for bit (Y with its NaN, the maps, the moved reference) and dense ORT's MaxPool on frames without NaN, at tau 0,
with and without a change map, on the window shapes of test_pool_engine_speedpaths (a horizontal stride of 1 runs
the NCHW passes over rows of lines, others output by output); at tau > 0 it equals the numpy reference's blocked
DeltaPool; with a dropped reference it equals dense ORT, and so does YOLOv8's SPPF (three pools chained by their
maps, with and without X_ref). NaN and -inf keep the NCHW rules. Each runs under every
SIMD variant and with b forced to 8, 4 and 1. Refused: C not a multiple of b, another layout, the block gate.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import test_pool_engine_speedpaths as speedpaths
from builders import DOMAIN, EMPTY, exact_change_map, op_model, op_session, value_info
from conftest import check_under_simd
from deltaonnx import reference as ref


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


# The NCHW engine's path-picking shapes with 16 or 32 channels (multiples of every b), and SPPF's pool as YOLOv8
# runs it: 5x5 s1 p2 on 20x20 with 128 channels (here 64, to keep the test short).
CASES = [(name, attrs, (n, 32 if c > 16 else 16, h, w)) for name, attrs, (n, c, h, w) in speedpaths.CASES] + [
    ("yolov8 sppf", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 64, 20, 20))]


def pool_sessions(attrs, with_map, tau=0.0, dropped=False):
    """Dense ORT MaxPool, the NCHW DeltaPool and the blocked one; dropped: no X_ref (tau 0, with a map)."""
    dense = op_session(op_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [value_info("x")],
                                [value_info("y")]), custom=False)

    def delta(layout):
        ins = ["x", "" if dropped else "x_ref", "y_prev"] + (["map_in"] if with_map else [])
        outs = ["y", "" if dropped else "x_ref_next", "map"]
        node = helper.make_node("DeltaPool", ins, outs, domain=DOMAIN, name=f"pool_{layout}", threshold=tau,
                                layout=layout, **attrs)
        vis = [value_info(n) for n in ins if n and n != "map_in"] + (
            [value_info("map_in", TensorProto.UINT8)] if with_map else [])
        outs_vi = [value_info(n) for n in outs if n and n != "map"] + [value_info("map", TensorProto.UINT8)]
        return op_session(op_model([node], vis, outs_vi))

    return dense, delta("nchw"), delta("blocked")


def frames_with_specials(rng, shape):
    """The speed-path test's sequence, then a NaN in the middle, a block of -inf (a window of -inf gives the lowest
    float), both gone again."""
    frames = speedpaths._frames(rng, shape)
    x = frames[-1].copy()
    x[0, shape[1] - 1, shape[2] // 2, shape[3] // 2] = np.nan
    frames.append(x)
    x = frames[-1].copy()
    x[0, :, : max(1, shape[2] // 3), : max(1, shape[3] // 3)] = -np.inf
    frames.append(x)
    frames.append(frames[-3].copy())
    return frames


def check_case(attrs, shape, with_map, seed):
    b = channel_block()
    rng = np.random.default_rng(seed)
    dense, nchw, blocked = pool_sessions(attrs, with_map)
    state_n, state_b, prev = (EMPTY, EMPTY), (EMPTY, EMPTY), None
    for step, x in enumerate(frames_with_specials(rng, shape)):
        feed_n = {"x": x, "x_ref": state_n[0], "y_prev": state_n[1]}
        feed_b = {"x": ref.to_blocked(x, b), "x_ref": state_b[0], "y_prev": state_b[1]}
        if with_map:
            feed_n["map_in"] = feed_b["map_in"] = exact_change_map(x, prev)
        y_n, ref_n, map_n = nchw.run(None, feed_n)
        y_b, ref_b, map_b = blocked.run(None, feed_b)
        where = f"{attrs} {shape} map={with_map} b={b} frame {step}"
        np.testing.assert_array_equal(ref.from_blocked(y_b, b), y_n, err_msg=where)  # NaN matches NaN
        np.testing.assert_array_equal(map_b, map_n, err_msg=where)
        np.testing.assert_array_equal(ref.from_blocked(ref_b, b), ref_n, err_msg=where)
        if not np.isnan(x).any():
            np.testing.assert_array_equal(y_n, dense.run(None, {"x": x})[0], err_msg=where)
        state_n, state_b, prev = (ref_n, y_n), (ref_b, y_b), x


def check_reference(attrs, shape, tau, with_map, seed):
    """tau > 0: the blocked op against the numpy reference's blocked DeltaPool, frames with sub-tau noise."""
    b = channel_block()
    rng = np.random.default_rng(seed)
    _, _, blocked = pool_sessions(attrs, with_map, tau=tau)
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    for step, x in enumerate(frames_with_specials(rng, shape)):
        x = x + (0.4 * tau * rng.standard_normal(shape)).astype(np.float32) if step else x
        map_in = exact_change_map(x, prev) if with_map else None
        feed = {"x": ref.to_blocked(x, b), "x_ref": x_ref, "y_prev": y_prev}
        if with_map:
            feed["map_in"] = map_in
        got = blocked.run(None, feed)
        want = ref.delta_pool(ref.to_blocked(x, b), x_ref, y_prev, map_in, threshold=tau, layout="blocked",
                              channel_block=b, **attrs)
        for name, g, w in zip(("Y", "X_ref_next", "map_out"), got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"{name} {attrs} {shape} tau={tau} b={b} frame {step}")
        x_ref, y_prev, prev = got[1], got[0], x


def check_dropped_reference(seed):
    """tau 0 with a map and no X_ref (docs/ops.md "Dropped reference"): the map's marks are the changes, recomputed
    from X itself; equal to dense ORT on every frame."""
    b = channel_block()
    rng = np.random.default_rng(seed)
    for _, attrs, shape in CASES[:3] + CASES[-1:]:
        dense, _, blocked = pool_sessions(attrs, with_map=True, dropped=True)
        y_prev, prev = EMPTY, None
        for step, x in enumerate(speedpaths._frames(rng, shape)):
            y, _ = blocked.run(None, {"x": ref.to_blocked(x, b), "y_prev": y_prev, "map_in": exact_change_map(x, prev)})
            np.testing.assert_array_equal(ref.from_blocked(y, b), dense.run(None, {"x": x})[0],
                                          err_msg=f"{attrs} b={b} frame {step}")
            y_prev, prev = y, x


def check_all(seed=5):
    for i, (_, attrs, shape) in enumerate(CASES):
        for with_map in (False, True):
            check_case(attrs, shape, with_map, seed + i)
    check_reference(CASES[0][1], CASES[0][2], 0.3, True, seed)
    check_reference(CASES[2][1], CASES[2][2], 0.3, False, seed)
    check_dropped_reference(seed)
    check_sppf_chain(seed)


def check_forced_block(block: int):
    assert channel_block() == block, "DELTAONNX_CHANNEL_BLOCK did not reach the library"
    check_all(seed=13)


@pytest.mark.sanitizer
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_map", [False, True])
def test_blocked_equals_nchw_op_and_dense_ort(case, with_map):
    check_case(case[1], case[2], with_map, seed=3)


@pytest.mark.parametrize("case", CASES[:4] + CASES[-1:], ids=[c[0] for c in CASES[:4] + CASES[-1:]])
@pytest.mark.parametrize("with_map", [False, True])
def test_blocked_equals_reference_above_tau_0(case, with_map):
    check_reference(case[1], case[2], 0.3, with_map, seed=4)


def test_dropped_reference():
    check_dropped_reference(seed=6)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_blocked_pool", "check_all(seed=11)")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "avx512"), ("4", "scalar"), ("1", "scalar")])
def test_forced_channel_block(block, simd):
    check_under_simd(simd, "test_blocked_pool", f"check_forced_block({block})", channel_block=block)


def sppf_chain(dropped):
    """YOLOv8's SPPF: three 5x5 s1 p2 max pools in a row, each pool's map the next one's map_in; dropped: no X_ref
    (tau 0 with a map, as convert writes them behind a gate)."""
    attrs = dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    nodes, inputs, outputs = [], [value_info("map_in", TensorProto.UINT8)], []
    x, m = "x", "map_in"
    for i in range(3):
        ref_in, ref_out = ("", "") if dropped else (f"x_ref{i}", f"x_ref_next{i}")
        nodes.append(helper.make_node("DeltaPool", [x, ref_in, f"y_prev{i}", m], [f"y{i}", ref_out, f"map{i}"],
                                      domain=DOMAIN, name=f"sppf_{i}", layout="blocked", **attrs))
        inputs += [value_info(n) for n in (x, ref_in, f"y_prev{i}") if n and (n != x or i == 0)]
        outputs += [value_info(n) for n in (f"y{i}", ref_out) if n]
        x, m = f"y{i}", f"map{i}"
    outputs.append(value_info("map2", TensorProto.UINT8))
    dense = [helper.make_node("MaxPool", ["x" if i == 0 else f"d{i - 1}"], [f"d{i}"], **attrs) for i in range(3)]
    return (op_session(op_model(nodes, inputs, outputs)),
            op_session(op_model(dense, [value_info("x")], [value_info(f"d{i}") for i in range(3)]), custom=False))


def check_sppf_chain(seed):
    b = channel_block()
    rng = np.random.default_rng(seed)
    for dropped in (False, True):
        chain, dense = sppf_chain(dropped)
        names = [o.name for o in chain.get_outputs()]
        state, prev = {}, None
        for step, x in enumerate(speedpaths._frames(rng, (1, 64, 20, 20))):
            feed = {"x": ref.to_blocked(x, b), "map_in": exact_change_map(x, prev)}
            for i in range(3):
                feed[f"y_prev{i}"] = state.get(f"y{i}", EMPTY)
                if not dropped:
                    feed[f"x_ref{i}"] = state.get(f"x_ref_next{i}", EMPTY)
            got = dict(zip(names, chain.run(None, feed)))
            for i, want in enumerate(dense.run(None, {"x": x})):
                np.testing.assert_array_equal(ref.from_blocked(got[f"y{i}"], b), want,
                                              err_msg=f"pool {i} dropped={dropped} b={b} frame {step}")
            state, prev = got, x


@pytest.mark.sanitizer
def test_sppf_chain_with_maps_equals_dense_ort():
    check_sppf_chain(seed=8)


# ---------------------------------------------------------------------------------------------------------
# refused
# ---------------------------------------------------------------------------------------------------------

def pool_error(attrs, shape=(1, 16, 6, 6), library=None) -> str:
    node = helper.make_node("DeltaPool", ["x", "x_ref", "y_prev"], ["y", "x_ref_next", "map"], domain=DOMAIN,
                            name="bad_pool", **attrs)
    model = op_model([node], [value_info("x"), value_info("x_ref"), value_info("y_prev")],
                     [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)])
    with pytest.raises(Exception) as info:
        op_session(model, library=library).run(None, {"x": np.zeros(shape, np.float32), "x_ref": EMPTY, "y_prev": EMPTY})
    message = str(info.value)
    assert "DeltaPool node 'bad_pool'" in message, message
    return message


@pytest.mark.parametrize("attrs, message", [
    (dict(layout="nhwc"), "attribute 'layout' must be \"nchw\" or \"blocked\", got \"nhwc\""),
    (dict(layout=3), "attribute 'layout' must be a string"),
    (dict(layout="blocked", gate="block", threshold=0.1), "attribute 'layout' = \"blocked\" needs gate = \"pixel\""),
])
def test_refused_attributes(attrs, message):
    assert message in pool_error(dict(kernel_shape=[3, 3], **attrs))


def check_channels_not_multiple_of_block():
    assert channel_block() == 16
    message = pool_error(dict(kernel_shape=[3, 3], layout="blocked"), shape=(1, 8, 6, 6))
    assert "X (layout \"blocked\") has 8 channels" in message and "channel block 16" in message, message


def test_channels_not_multiple_of_block_refused(monkeypatch):
    monkeypatch.setenv("DELTAONNX_CHANNEL_BLOCK", "16")
    check_under_simd("scalar", "test_blocked_pool", "check_channels_not_multiple_of_block()")


def test_reference_refuses_what_the_op_refuses():
    x = np.zeros((1, 8, 4, 4), np.float32)
    with pytest.raises(ValueError, match="not a multiple of the channel block 16"):
        ref.delta_pool(x, kernel_shape=[3, 3], layout="blocked", channel_block=16)
    with pytest.raises(ValueError, match="layout"):
        ref.delta_pool(x, kernel_shape=[3, 3], layout="nhwc")
    with pytest.raises(ValueError, match="gate"):
        ref.delta_pool(x, kernel_shape=[3, 3], layout="blocked", gate="block", threshold=0.1, channel_block=1)


def test_emulated_cuda_takes_blocked_as_nchw(emulated_cuda_library, rng):
    """The CUDA library's b is 1: layout "blocked" is accepted and runs the NCHW kernels, equal to its NCHW op;
    a bad layout is refused there too."""
    attrs = dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2])

    def session(layout):
        node = helper.make_node("DeltaPool", ["x", "x_ref", "y_prev"], ["y", "x_ref_next", "map"], domain=DOMAIN,
                                name="cuda_pool", layout=layout, **attrs)
        return op_session(op_model([node], [value_info("x"), value_info("x_ref"), value_info("y_prev")],
                                   [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]),
                          library=emulated_cuda_library)

    nchw, blocked = session("nchw"), session("blocked")
    state_n, state_b = (EMPTY, EMPTY), (EMPTY, EMPTY)
    for x in speedpaths._frames(rng, (1, 12, 9, 11)):  # 12 channels: any count, b = 1
        got_n = nchw.run(None, {"x": x, "x_ref": state_n[0], "y_prev": state_n[1]})
        got_b = blocked.run(None, {"x": x, "x_ref": state_b[0], "y_prev": state_b[1]})
        for g, w in zip(got_b, got_n):
            np.testing.assert_array_equal(g, w)
        state_n, state_b = (got_n[1], got_n[0]), (got_b[1], got_b[0])
    assert "attribute 'layout' must be" in pool_error(dict(attrs, layout="nhwc"), library=emulated_cuda_library)
