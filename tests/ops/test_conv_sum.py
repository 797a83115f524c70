"""DeltaConv's sum input (docs/design.md#deltaconv, #rule-4, #rule-5): Y = act(conv(X_ref_next) + B + Z), the
pixels marked in map_z recomputed besides rule 4's.

Over frames where X and Z change in different places (Z changing where X does not must recompute there), at tau 0
the op equals dense ORT's Conv + Add (+ activation) and the numpy reference, map_out equals the reference's
(rule 4's marks united with map_z's), in NCHW, "blocked" and "blocked_out", copying and in place. Every check runs
under each SIMD variant and with the channel block forced to 8 and 1. Bad nodes and shapes are clear errors.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import EMPTY, assert_close_nan, assert_pad_lanes_zero, exact_change_map, op_model, op_session, value_info
from conftest import check_under_simd
from deltaonnx import reference
from deltaonnx.graph_passes.protocol import DOMAIN
from deltaonnx.reference import from_blocked, padded_channels, to_blocked


def channel_block() -> int:
    from deltaonnx import _native

    return int(_native.channel_block())


# (C, M, kernel, stride, pads, H, W); channel counts are multiples of 16 (every b), so every layout takes them.
CASES = [
    (16, 32, 3, 1, [1, 1, 1, 1], 13, 18),
    (32, 16, 3, 2, [1, 1, 1, 1], 21, 26),
    (16, 48, 1, 1, [0, 0, 0, 0], 11, 15),
]
# Padded channel blocks (docs/ops.md#padded-blocks): C or M not a multiple of 16 nor of 8, so Y and Z hold
# roundup(M, b) channels under both blocks; C 12 < 16 reads its one block as NCHW on the dense path at b = 16, C 3
# is a stem's; C 20, 24, 18 and 72 (blocked_out at b = 16: 72 -> 40 s2 the NCHW input padded to whole blocks for
# ORT's NCHWc Conv with Z as its Sum, the others on our engine); a last element is the batch (default 1).
PADDED_CASES = [
    (20, 12, 3, 1, [1, 1, 1, 1], 13, 18),
    (12, 40, 3, 2, [1, 1, 1, 1], 21, 26, 2),
    (3, 20, 3, 1, [1, 1, 1, 1], 13, 17, 2),
    (24, 20, 1, 1, [0, 0, 0, 0], 11, 15),
    (18, 12, 3, 1, [1, 1, 1, 1], 9, 11),
    (72, 40, 3, 2, [1, 1, 1, 1], 9, 10),
]
PADDED_ACTIVATIONS = [("", []), ("Relu", []), ("PRelu", None), ("Clip", [0.0, 6.0])]  # act(0) = 0: pads stay 0
# PRelu: one slope per channel; Clip (Relu6) and LeakyRelu run inside ORT's NCHWc Conv too, after its Sum.
ACTIVATIONS = [("", []), ("Relu", []), ("SiLU", []), ("PRelu", None), ("Clip", [0.0, 6.0]), ("LeakyRelu", [0.1])]
LAYOUTS = ["nchw", "blocked", "blocked_out"]


def _dense_session(w, bias, attrs, activation, slopes):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Add", ["c", "z"], ["s"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")]
    if activation == "":
        nodes.append(helper.make_node("Identity", ["s"], ["y"]))
    elif activation == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["s"], ["g"]), helper.make_node("Mul", ["s", "g"], ["y"])]
    elif activation == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["s"], ["y"], alpha=slopes[0]))
    elif activation == "Clip":
        nodes.append(helper.make_node("Clip", ["s", "lo", "hi"], ["y"]))
        inits += [numpy_helper.from_array(np.float32(slopes[0]), "lo"), numpy_helper.from_array(np.float32(slopes[1]), "hi")]
    elif activation == "PRelu":
        nodes.append(helper.make_node("PRelu", ["s", "slope"], ["y"]))
        inits.append(numpy_helper.from_array(np.asarray(slopes, np.float32).reshape(-1, 1, 1), "slope"))
    else:
        nodes.append(helper.make_node(activation, ["s"], ["y"]))
    return op_session(op_model(nodes, [value_info("x"), value_info("z")], [value_info("y")], inits), custom=False)


def sum_model(w, bias, attrs, *, activation="", params=(), layout="nchw", with_map=True, ref_input=True,
              with_map_z=True, with_z=True):
    inputs = ["x", "w", "b", "x_ref" if ref_input else "", "y_prev", "map_in" if with_map else "",
              "z" if with_z else "", "map_z" if with_map_z else ""]
    node = helper.make_node("DeltaConv", inputs, ["y", "x_ref_next" if ref_input else "", "map"], domain=DOMAIN,
                            name="summed", activation=activation, layout=layout, **attrs,
                            **({"activation_params": list(params)} if params else {}))
    graph_inputs = [value_info("x"), value_info("y_prev")] + ([value_info("x_ref")] if ref_input else [])
    graph_inputs += [value_info("map_in", TensorProto.UINT8)] if with_map else []
    graph_inputs += [value_info("z")] if with_z else []
    graph_inputs += [value_info("map_z", TensorProto.UINT8)] if with_map_z else []
    outputs = [value_info("y"), value_info("map", TensorProto.UINT8)]
    outputs += [value_info("x_ref_next")] if ref_input else []
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")]
    return op_model([node], graph_inputs, outputs, inits)


def frames_apart(rng, x_shape, z_shape, count=7):
    """(x, z) pairs: a first frame, then frames changing X in one corner, Z in another, both, neither, and a NaN
    in Z; the last changes both everywhere (the dense path)."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    z = rng.standard_normal(z_shape).astype(np.float32)
    frames = [(x, z)]
    H, W = x_shape[2:]
    Ho, Wo = z_shape[2:]
    for kind in ["x", "z", "both", "none", "z", "nan", "x"][: count - 2]:
        x, z = x.copy(), z.copy()
        if kind in ("x", "both"):
            x[:, :, : H // 3, : W // 3] += 1.0
        if kind in ("z", "both"):  # far from X's change: only map_z can make these outputs recomputed
            z[:, :, Ho - 2:, Wo // 2: Wo // 2 + 3] -= 1.5
        if kind == "nan":
            z[0, 1, Ho // 2, Wo - 1] = np.nan
        frames.append((x, z))
    frames.append((rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(z_shape).astype(np.float32)))
    return frames


def check_case(case, activation, params, layout, ref_input, seed, library=None, block=None):
    """library: the op library (default the CPU one); block: its channel block (default the CPU library's)."""
    C, M, k, s, pads, H, W = case[:7]
    N = case[7] if len(case) > 7 else 1
    b = block or channel_block()
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    bias = rng.standard_normal(M).astype(np.float32)
    if params is None:
        params = [float(v) for v in np.linspace(-0.5, 0.5, M)]
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads)
    dense = _dense_session(w, bias, attrs, activation, params)
    session = op_session(sum_model(w, bias, attrs, activation=activation, params=params, layout=layout,
                                   ref_input=ref_input), library)
    Ho, Wo = (H + pads[0] + pads[2] - k) // s + 1, (W + pads[1] + pads[3] - k) // s + 1
    x_in = (lambda a: to_blocked(a, b)) if layout == "blocked" else (lambda a: a)
    y_in = (lambda a: to_blocked(a, b)) if layout != "nchw" else (lambda a: a)
    y_out = (lambda a: from_blocked(a, b, M)) if layout != "nchw" else (lambda a: a)
    frames = frames_apart(rng, (N, C, H, W), (N, M, Ho, Wo))
    x_ref, y_prev, prev = EMPTY, EMPTY, (None, None)
    ref_y, ref_state = EMPTY, EMPTY
    outs = []
    for t, (x, z) in enumerate(frames):
        map_in, map_z = exact_change_map(x, prev[0]), exact_change_map(z, prev[1])
        feed = {"x": x_in(x), "y_prev": y_prev, "map_in": map_in, "z": y_in(z), "map_z": map_z}
        if ref_input:
            feed["x_ref"] = x_ref
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        want_y, want_ref, want_map = reference.delta_conv(
            x, w, bias, ref_state if ref_input else None, ref_y, map_in, z, map_z, activation=activation,
            activation_params=params, drop_reference=not ref_input, **attrs)
        where = f"{case} {activation!r} {layout} ref={ref_input} b={b} frame {t}"
        np.testing.assert_array_equal(got["map"], want_map, err_msg=where)
        if layout != "nchw":  # a padded Y's pad lanes: conv 0 + bias 0 + Z's 0, activated to 0
            assert got["y"].shape[1] == padded_channels(M, b), where
            assert_pad_lanes_zero(got["y"], b, M, where)
        assert_close_nan(y_out(got["y"]), want_y)
        assert_close_nan(y_out(got["y"]), dense.run(None, {"x": x, "z": z})[0])
        assert np.all(got["map"][map_z != 0] == 1), where  # Z's changes are recomputed, wherever X changed
        if t == 2:  # Z alone changed: its marks are the only recomputed outputs
            np.testing.assert_array_equal(got["map"], map_z, err_msg=where)
        outs.append(got)
        y_prev, prev, ref_y, ref_state = got["y"], (x, z), want_y, want_ref
        if ref_input:
            x_ref = got["x_ref_next"]
    check_in_place(session, frames, outs, x_in, y_in, ref_input)
    check_z_shares_y(session, frames, outs, x_in, y_in, ref_input,
                     [dense.run(None, {"x": x, "z": z})[0] for x, z in frames], y_out)


def check_z_shares_y(session, frames, copying, x_in, y_in, ref_input, dense_ys, y_out):
    """Z bound to Y's own buffer (docs/ops.md#the-sum-input): without state (a stateless run's scratch) every frame
    equals dense ORT, ORT's NCHWc Conv adding onto Z where it lies; with state (Y_prev apart, X_ref kept in place)
    the op reads a copy of Z, and every frame equals the run with Z apart."""
    for stateful in (False, True):
        shared = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(copying[0]["y"]))
        ref_state = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(x_in(frames[0][0])))
        prev = (None, None)
        for t, (x, z) in enumerate(frames):
            np.copyto(shared.numpy(), y_in(z))
            binding = session.io_binding()
            binding.bind_cpu_input("x", x_in(x))
            binding.bind_ortvalue_input("z", shared)
            binding.bind_ortvalue_output("y", shared)
            binding.bind_cpu_input("map_in", exact_change_map(x, prev[0] if stateful else None))
            binding.bind_cpu_input("map_z", exact_change_map(z, prev[1] if stateful else None))
            with_state = stateful and t > 0
            binding.bind_cpu_input("y_prev", copying[t - 1]["y"].copy() if with_state else EMPTY)
            if ref_input:
                binding.bind_ortvalue_input("x_ref", ref_state) if with_state else binding.bind_cpu_input("x_ref", EMPTY)
                binding.bind_ortvalue_output("x_ref_next", ref_state)
            binding.bind_output("map")
            session.run_with_iobinding(binding)
            where = f"Z shares Y's buffer, {'with' if stateful else 'without'} state, frame {t}"
            if stateful:
                np.testing.assert_array_equal(shared.numpy(), copying[t]["y"], err_msg=where)
            else:
                assert_close_nan(y_out(shared.numpy()), dense_ys[t])
            prev = (x, z)


def check_in_place(session, frames, copying, x_in, y_in, ref_input):
    """Y bound to Y_prev (and X_ref_next to X_ref): the op writes only what it recomputes, equal to copying."""
    y_state = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(copying[0]["y"]))
    ref_state = ort.OrtValue.ortvalue_from_numpy(np.zeros_like(x_in(frames[0][0])))
    prev = (None, None)
    for t, (x, z) in enumerate(frames):
        binding = session.io_binding()
        binding.bind_cpu_input("x", x_in(x))
        binding.bind_cpu_input("z", y_in(z))
        binding.bind_cpu_input("map_in", exact_change_map(x, prev[0]))
        binding.bind_cpu_input("map_z", exact_change_map(z, prev[1]))
        if t == 0:
            binding.bind_cpu_input("y_prev", EMPTY)
            if ref_input:
                binding.bind_cpu_input("x_ref", EMPTY)
        else:
            binding.bind_ortvalue_input("y_prev", y_state)
            if ref_input:
                binding.bind_ortvalue_input("x_ref", ref_state)
        binding.bind_ortvalue_output("y", y_state)
        binding.bind_output("map")
        if ref_input:
            binding.bind_ortvalue_output("x_ref_next", ref_state)
        session.run_with_iobinding(binding)
        np.testing.assert_array_equal(binding.get_outputs()[1].numpy(), copying[t]["map"], err_msg=f"frame {t}")
        np.testing.assert_array_equal(y_state.numpy(), copying[t]["y"], err_msg=f"frame {t}: Y in place")
        prev = (x, z)


def check_all_cases(seed=3):
    for i, case in enumerate(CASES):
        for activation, params in ACTIVATIONS:
            for layout in LAYOUTS:
                check_case(case, activation, params, layout, ref_input=True, seed=seed + i)
        check_case(case, "Relu", [], "blocked", ref_input=False, seed=seed + i)  # a dropped reference
        check_case(case, "Relu", [], "nchw", ref_input=False, seed=seed + i)


@pytest.mark.sanitizer
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation, params", ACTIVATIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sum_equals_dense_ort_and_reference(case, activation, params, layout):
    check_case(case, activation, params, layout, ref_input=True, seed=5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sum_with_dropped_reference(layout):
    for i, case in enumerate(CASES):
        check_case(case, "Relu", [], layout, ref_input=False, seed=7 + i)


@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512", "neon"])
def test_every_simd_variant(simd):
    check_under_simd(simd, "test_conv_sum", "check_all_cases(seed=11)")


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "scalar"), ("1", "scalar")])
def test_forced_channel_block(block, simd):
    check_under_simd(simd, "test_conv_sum", "check_all_cases(seed=13)", channel_block=block)


def check_padded_cases(seed=17):
    for i, case in enumerate(PADDED_CASES):
        for activation, params in PADDED_ACTIVATIONS:
            for layout in ["blocked", "blocked_out"]:
                check_case(case, activation, params, layout, ref_input=True, seed=seed + i)
        check_case(case, "Relu", [], "blocked", ref_input=False, seed=seed + i)


@pytest.mark.parametrize("case", PADDED_CASES)
@pytest.mark.parametrize("layout", ["blocked", "blocked_out"])
def test_padded_sum_equals_dense_ort_and_reference(case, layout):
    """Z of a padded blocked conv has Y's padded shape; its pad lanes are zero, so Y's stay zero."""
    for activation, params in PADDED_ACTIVATIONS:
        check_case(case, activation, params, layout, ref_input=True, seed=19)


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("8", "scalar"), ("16", "avx512"), ("16", "scalar")])
def test_padded_sum_forced_channel_block(block, simd):
    check_under_simd(simd, "test_conv_sum", "check_padded_cases(seed=23)", channel_block=block)


def test_padded_z_of_the_logical_channel_count_is_an_error():
    """Z must hold Y's roundup(M, b) channels, not M, in the op and the reference."""
    b = channel_block()
    if b == 1:
        pytest.skip("b = 1 pads nothing")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 16, 3, 3)).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    session = op_session(sum_model(w, np.zeros(20, np.float32), attrs, layout="blocked"))
    x = to_blocked(np.zeros((1, 16, 8, 9), np.float32), b)
    feed = {"x": x, "x_ref": EMPTY, "y_prev": EMPTY, "map_in": np.ones((1, 1, 8, 9), np.uint8),
            "z": np.zeros((1, padded_channels(20, b), 8, 9), np.float32), "map_z": np.ones((1, 1, 8, 9), np.uint8)}
    session.run(None, feed)
    with pytest.raises(Exception, match="but Y has shape"):
        session.run(None, dict(feed, z=np.zeros((1, 20, 8, 9), np.float32)))
    with pytest.raises(ValueError, match="Z has shape"):
        reference.delta_conv(x, w, None, None, None, None, np.zeros((1, 20, 8, 9), np.float32),
                             np.ones((1, 1, 8, 9), np.uint8), layout="blocked", channel_block=b, **attrs)


def _small():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    return w, np.zeros(16, np.float32), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])


@pytest.mark.parametrize("leave_out, message", [("map_z", "needs its change map input map_z"),
                                                ("z", "map_z is given without the sum input Z")])
def test_z_and_map_z_go_together(leave_out, message):
    w, bias, attrs = _small()
    model = sum_model(w, bias, attrs, with_map_z=leave_out != "map_z", with_z=leave_out != "z")
    with pytest.raises(Exception, match=message):
        op_session(model)


def test_sum_refused_by_grouped_convs_and_softmax():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    model = sum_model(w, np.zeros(16, np.float32), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=16))
    with pytest.raises(Exception, match="needs group = 1"):
        op_session(model)
    w, bias, attrs = _small()
    with pytest.raises(Exception, match="does not take the channel activation 'Softmax'"):
        op_session(sum_model(w, bias, attrs, activation="Softmax"))


@pytest.mark.sanitizer
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_wrong_shapes_are_errors(layout):
    w, bias, attrs = _small()
    session = op_session(sum_model(w, bias, attrs, layout=layout))
    x = np.zeros((1, 16, 8, 9), np.float32)
    good = {"x": x, "x_ref": EMPTY, "y_prev": EMPTY, "map_in": np.ones((1, 1, 8, 9), np.uint8),
            "z": np.zeros((1, 16, 8, 9), np.float32), "map_z": np.ones((1, 1, 8, 9), np.uint8)}
    session.run(None, good)
    for name, value, message in [("z", np.zeros((1, 16, 8, 8), np.float32), r"Z has shape \[1,16,8,8\]"),
                                 ("z", np.zeros((1, 32, 8, 9), np.float32), "but Y has shape"),
                                 ("map_z", np.ones((1, 1, 9, 8), np.uint8), r"map_z has shape \[1,1,9,8\]"),
                                 ("map_z", np.ones((1, 2, 8, 9), np.uint8), "expected")]:
        with pytest.raises(Exception, match=message):
            session.run(None, dict(good, **{name: value}))


def test_reference_refuses_what_the_op_refuses():
    w, bias, attrs = _small()
    x = np.zeros((1, 16, 8, 9), np.float32)
    with pytest.raises(ValueError, match="go together"):
        reference.delta_conv(x, w, bias, EMPTY, EMPTY, None, np.zeros((1, 16, 8, 9), np.float32), None, **attrs)
    with pytest.raises(ValueError, match="Z has shape"):
        reference.delta_conv(x, w, bias, EMPTY, EMPTY, None, np.zeros((1, 16, 8, 8), np.float32),
                             np.ones((1, 1, 8, 8), np.uint8), **attrs)


@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_cuda_library_adds_the_sum(emulated_cuda_library, layout):
    """The CUDA kernels through the host emulation: the sum's marks join the pixel list, Z is added in the
    gather-GEMM's epilogue (b = 1 there: "blocked" is NCHW memory)."""
    for i, case in enumerate(CASES):
        for activation, params in ACTIVATIONS:
            check_case(case, activation, params, layout, ref_input=True, seed=17 + i, library=emulated_cuda_library,
                       block=1)
        check_case(case, "Relu", [], layout, ref_input=False, seed=19 + i, library=emulated_cuda_library, block=1)
