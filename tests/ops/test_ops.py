"""DeltaConv / DeltaPool / DeltaMapUnion in ONNX Runtime: exact against ORT's own Conv/MaxPool at tau = 0,
docs/design.md's invariants (rule 5) and the numpy reference at tau > 0, in-place state, threads, and clear errors."""
from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from builders import (DOMAIN, EMPTY, ORT_ACTIVATIONS, ConvPair, assert_close_nan, exact_change_map, frame_sequence,
                      op_model, op_session, value_info)
from deltaonnx import reference

conv_cases = st.fixed_dictionaries({
    "k": st.tuples(st.integers(1, 5), st.integers(1, 5)),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dil": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pads": st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    "group": st.sampled_from([1, 2, 4]),
    "cpg": st.integers(1, 6),
    "mpg": st.integers(1, 12),
    # Widths below and above a GEMM tile (48 pixels on AVX-512): narrow maps gather, wide ones tile rows.
    "hw": st.tuples(st.integers(7, 26), st.one_of(st.integers(7, 30), st.integers(40, 70))),
    "batch": st.integers(1, 2),
    "bias": st.booleans(),
    "auto_pad": st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
    "activation": st.sampled_from(list(ORT_ACTIVATIONS) + ["PRelu"]),
    "with_map": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
})


def _conv_attrs(case):
    # ORT's own Conv (the oracle) refuses dilations with SAME padding.
    dil = [1, 1] if case["auto_pad"].startswith("SAME") else list(case["dil"])
    attrs = dict(kernel_shape=list(case["k"]), strides=list(case["stride"]), dilations=dil, group=case["group"])
    if case["auto_pad"] == "NOTSET":
        attrs["pads"] = list(case["pads"])
    else:
        attrs["auto_pad"] = case["auto_pad"]
    return attrs


@pytest.mark.sanitizer
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases)
def test_delta_conv_equals_ort_conv_at_threshold_zero(case):
    """Rule 5 at tau = 0: every frame equals ORT's Conv (+ activation) for random attributes, with and without
    change maps, through first frame, no change, local and global change, NaN and a resolution change."""
    rng = np.random.default_rng(case["seed"])
    g, C, M = case["group"], case["cpg"] * case["group"], case["mpg"] * case["group"]
    kh, kw = case["k"]
    h, w = case["hw"]
    # Keep the window inside the padded input.
    h, w = max(h, (kh - 1) * case["dil"][0] + 1), max(w, (kw - 1) * case["dil"][1] + 1)
    attrs = _conv_attrs(case)
    wt = rng.standard_normal((M, C // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if case["bias"] else None
    pair = ConvPair(wt, b, attrs, case["activation"], with_map=case["with_map"])
    kinds = ["first", "local", "none", "local", "global", "nan", "local", "resize", "local", "none"]
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    for x in frame_sequence(rng, (case["batch"], C, h, w), kinds):
        y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
        assert_close_nan(y, pair.run_dense(x))
        assert map_out.shape == (x.shape[0], 1) + y.shape[2:] and map_out.dtype == np.uint8
        x_ref, y_prev, prev = x_ref_next, y, x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases, st.sampled_from([0.05, 0.3, 1.0]))
def test_delta_conv_matches_reference_and_invariants_above_zero(case, tau):
    """tau > 0: Y, X_ref_next and the change map equal the numpy reference (rules 1-4), and rule 5 holds:
    Y == act(conv(X_ref_next) + B) everywhere and max_c |X - X_ref_next| <= tau at every pixel."""
    rng = np.random.default_rng(case["seed"])
    g, C, M = case["group"], case["cpg"] * case["group"], case["mpg"] * case["group"]
    kh, kw = case["k"]
    h, w = max(case["hw"][0], (kh - 1) * case["dil"][0] + 1), max(case["hw"][1], (kw - 1) * case["dil"][1] + 1)
    wt = rng.standard_normal((M, C // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if case["bias"] else None
    pair = ConvPair(wt, b, _conv_attrs(case), case["activation"], threshold=tau, with_map=case["with_map"])
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    frames = frame_sequence(rng, (case["batch"], C, h, w), ["first", "local", "none", "local", "global", "local"])
    for step, x in enumerate(frames):
        x = x + (0.4 * tau * rng.standard_normal(x.shape)).astype(np.float32) if step else x  # sub-tau drift
        map_in = exact_change_map(x, prev)
        y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev, map_in)
        ry, rx, rmap = pair.run_reference(x, x_ref, y_prev, map_in if pair.with_map else None)
        np.testing.assert_array_equal(x_ref_next, rx)
        np.testing.assert_array_equal(map_out, rmap)
        assert_close_nan(y, ry)
        assert np.all(np.abs(x - x_ref_next).max(axis=1) <= tau)
        assert_close_nan(y, pair.run_dense(x_ref_next))
        x_ref, y_prev, prev = x_ref_next, y, x


def _pool_pair(attrs, threshold=0.0, with_map=False):
    dense = op_session(op_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [value_info("x")], [value_info("y")]),
                     custom=False)
    ins = ["x", "x_ref", "y_prev"] + (["map_in"] if with_map else [])
    node = helper.make_node("DeltaPool", ins, ["y", "x_ref_next", "map"], domain=DOMAIN, name="dp",
                            threshold=threshold, **attrs)
    vis = [value_info("x"), value_info("x_ref"), value_info("y_prev")] + ([value_info("map_in", TensorProto.UINT8)] if with_map else [])
    delta = op_session(op_model([node], vis, [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]))
    return dense, delta


@pytest.mark.sanitizer
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({
    "k": st.tuples(st.integers(1, 5), st.integers(1, 5)),
    "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "dil": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pad": st.integers(0, 2),
    "ceil": st.integers(0, 1),
    "with_map": st.booleans(),
    "seed": st.integers(0, 2**31 - 1),
}))
def test_delta_pool_equals_ort_maxpool_at_threshold_zero(case):
    rng = np.random.default_rng(case["seed"])
    kh, kw = case["k"]
    p = [min(case["pad"], kh // 2), min(case["pad"], kw // 2)]  # ORT requires pad < kernel
    attrs = dict(kernel_shape=[kh, kw], strides=list(case["stride"]), dilations=list(case["dil"]),
                 pads=[p[0], p[1], p[0], p[1]], ceil_mode=case["ceil"])
    dense, delta = _pool_pair(attrs, with_map=case["with_map"])
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    for x in frame_sequence(rng, (2, 3, 17, 19), ["first", "local", "none", "local", "global", "resize", "local"]):
        feed = {"x": x, "x_ref": x_ref, "y_prev": y_prev}
        if case["with_map"]:
            feed["map_in"] = exact_change_map(x, prev)
        y, x_ref_next, _ = delta.run(None, feed)
        np.testing.assert_array_equal(y, dense.run(None, {"x": x})[0])
        x_ref, y_prev, prev = x_ref_next, y, x


def test_delta_pool_matches_reference_above_zero(rng):
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    _, delta = _pool_pair(attrs, threshold=0.2)
    x_ref, y_prev = EMPTY, EMPTY
    for x in frame_sequence(rng, (1, 4, 20, 24), ["first", "local", "local", "none", "global"]):
        x = x + (0.05 * rng.standard_normal(x.shape)).astype(np.float32)
        y, x_ref_next, m = delta.run(None, {"x": x, "x_ref": x_ref, "y_prev": y_prev})
        ry, rx, rm = reference.delta_pool(x, x_ref, y_prev, threshold=0.2, **attrs)
        np.testing.assert_array_equal(x_ref_next, rx)
        np.testing.assert_array_equal(m, rm)
        np.testing.assert_array_equal(y, ry)
        x_ref, y_prev = x_ref_next, y


@pytest.mark.sanitizer
def test_nan_never_hides_a_change(rng):
    """A NaN (or Inf) appearing, staying or leaving is always a change, at any threshold (rule 2)."""
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), threshold=1e6)
    x = rng.standard_normal((1, 3, 10, 10)).astype(np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    for value in (np.nan, np.inf, -np.inf):
        x2 = x.copy()
        x2[0, 1, 4, 5] = value
        y2, xr2, m2 = pair.run_delta(x2, xr, y)
        assert m2[0, 0, 3:6, 4:7].all() and m2.sum() == 9
        assert xr2[0, 1, 4, 5] == value or (np.isnan(value) and np.isnan(xr2[0, 1, 4, 5]))
        y3, xr3, m3 = pair.run_delta(x, xr2, y2)  # and back: the non-finite value leaving is a change too
        assert m3.sum() == 9
        np.testing.assert_allclose(y3, y, rtol=1e-5, atol=1e-5)


@pytest.mark.sanitizer
def test_first_frame_empty_state_and_any_zero_dim(rng):
    wt = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3]))
    x = rng.standard_normal((1, 2, 8, 9)).astype(np.float32)
    for empty in (EMPTY, np.zeros((1, 2, 0, 9), np.float32), np.zeros((0,) * 4, np.float32)):
        y, xr, m = pair.run_delta(x, empty, np.zeros((0, 0, 0, 0), np.float32))
        assert m.all()
        np.testing.assert_array_equal(xr, x)
        assert_close_nan(y, pair.run_dense(x))


def test_unchanged_frame_recomputes_nothing_and_keeps_output(rng):
    wt = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, rng.standard_normal(8).astype(np.float32), dict(kernel_shape=[3, 3], pads=[1] * 4), "Relu")
    x = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    y2, xr2, m2 = pair.run_delta(x.copy(), xr, y)
    assert m2.sum() == 0
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(xr2, xr)


@pytest.mark.sanitizer
@pytest.mark.parametrize("kernel, group, with_map, threads", [((3, 3), 1, False, 1), ((1, 1), 1, True, 1),
                                                              ((3, 3), 4, True, 1), ((5, 3), 2, False, 1),
                                                              ((3, 3), 1, True, 2)])
def test_channel_softmax_is_applied_once_at_each_recomputed_pixel(rng, kernel, group, with_map, threads):
    """activation Softmax normalises the channels of each pixel: equal to ORT's Conv + Softmax(axis 1) on every
    frame at tau 0, and the pixels the op does not recompute keep Y_prev bit for bit (normalising them again
    would change them). Covers the GEMM, depthwise and whole-item paths."""
    C, M = 4, 4 if group == 4 else 6
    w = rng.standard_normal((M, C // group) + kernel).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    pad = [kernel[0] // 2, kernel[1] // 2] * 2
    pair = ConvPair(w, b, dict(pads=pad, group=group), "Softmax", with_map=with_map, threads=threads)
    x_ref, y_prev, prev = EMPTY, EMPTY, None
    hw = (17, 40) if threads == 1 else (70, 130)  # more than one chunk of the per-pixel pass for two threads
    for x in frame_sequence(rng, (2, C) + hw, ["first", "local", "none", "local", "nan", "global", "local"]):
        sentinel = y_prev.copy()
        y, x_ref_next, map_out = pair.run_delta(x, x_ref, y_prev, exact_change_map(x, prev))
        assert_close_nan(y, pair.run_dense(x), rtol=1e-5, atol=1e-6)
        if sentinel.shape == y.shape:
            kept = np.broadcast_to(map_out == 0, y.shape)
            np.testing.assert_array_equal(y[kept].view(np.uint32), sentinel[kept].view(np.uint32))
        x_ref, y_prev, prev = x_ref_next, y, x


@pytest.mark.sanitizer
def test_batch_items_are_independent_streams(rng):
    """A change in batch item 1 recomputes nothing in batch item 0."""
    wt = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3], pads=[1] * 4))
    x = rng.standard_normal((2, 2, 12, 12)).astype(np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    x2 = x.copy()
    x2[1, :, 5, 5] += 3
    y2, _, m = pair.run_delta(x2, xr, y)
    assert m[0].sum() == 0 and m[1].sum() == 9
    assert_close_nan(y2, pair.run_dense(x2))


def test_slow_drift_below_threshold_triggers_once_it_adds_up(rng):
    """Rule 3: the reference moves only where the op recomputes, so drift of tau/3 per frame is caught."""
    wt = rng.standard_normal((2, 1, 1, 1)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[1, 1]), threshold=0.3)
    x = np.zeros((1, 1, 4, 4), np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    fired = []
    for step in range(1, 5):
        x = x.copy()
        x[0, 0, 2, 2] += 0.1
        y, xr, m = pair.run_delta(x, xr, y)
        fired.append(int(m.sum()))
        assert np.abs(x - xr).max() <= 0.3
    assert fired == [0, 0, 0, 1]


@pytest.mark.sanitizer
def test_dense_fraction_switches_to_full_recompute(rng):
    wt = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3], pads=[1] * 4), dense_fraction=0.1)
    x = rng.standard_normal((1, 1, 10, 10)).astype(np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    x2 = x.copy()
    x2[0, 0, 1:4, 1:4] += 1  # 25 of 100 outputs > 10%: everything is recomputed
    y2, _, m = pair.run_delta(x2, xr, y)
    assert m.all()
    assert_close_nan(y2, pair.run_dense(x2))


@pytest.mark.parametrize("kernel, pads, dilations", [
    ([3, 3], [1, 1, 1, 1], [1, 1]),  # every window reads the input
    ([3, 3], [3, 3, 3, 3], [1, 1]),  # the border outputs read only padding
    ([1, 2], [0, 3, 0, 3], [1, 4]),  # dilated taps step over a 2-wide input
])
def test_every_input_changed_marks_the_outputs_whose_window_reads_it(kernel, pads, dilations, rng):
    """When every input pixel changed (noise, or a producer that recomputed everything) rule 4 marks every
    output whose window reads the input without an OR-pool (delta_state.cc plan_recompute); outputs whose
    windows lie wholly in the padding stay unmarked (dense_fraction 1 keeps the dense rule out of the way)."""
    wt = rng.standard_normal((2, 1, *kernel)).astype(np.float32)
    attrs = dict(kernel_shape=kernel, pads=pads, dilations=dilations)
    pair = ConvPair(wt, rng.standard_normal(2).astype(np.float32), attrs, dense_fraction=1.0)
    x = rng.standard_normal((1, 1, 6, 2)).astype(np.float32)
    y, x_ref, _ = pair.run_delta(x, EMPTY, EMPTY)
    x2 = x + 1
    y2, _, marks = pair.run_delta(x2, x_ref, y)

    def reads(extent, k, pad, dilation, out):
        return np.array([any(0 <= o - pad + t * dilation < extent for t in range(k)) for o in range(out)])

    ho, wo = marks.shape[2:]
    expected = np.outer(reads(6, kernel[0], pads[0], dilations[0], ho), reads(2, kernel[1], pads[1], dilations[1], wo))
    np.testing.assert_array_equal(marks[0, 0], expected)
    assert_close_nan(y2, pair.run_dense(x2))


@pytest.mark.parametrize("kernel, strides, pads, dilations", [
    ([1, 1], [1, 1], [0, 0, 0, 0], [1, 1]),  # an unchanged input keeps exactly one output: the bound is tight
    ([1, 1], [2, 2], [0, 0, 0, 0], [1, 1]),  # a quarter of the inputs, the lattice it reads, keeps every output
    ([2, 2], [2, 2], [0, 0, 0, 0], [1, 1]),  # a 2x2 block of unchanged inputs keeps one output: tight again
    ([7, 7], [2, 2], [3, 3, 3, 3], [1, 1]),  # a stem: border windows read fewer taps
    ([3, 3], [1, 1], [2, 2, 2, 2], [2, 2]),  # dilated
])
@pytest.mark.parametrize("unchanged", [0.02, 0.2, 0.45, 0.5, 0.55, 0.8])  # 0.5: a 1x1 conv exactly at the bound
@pytest.mark.parametrize("pattern", ["scattered", "block", "lattice"])
def test_most_inputs_changed_marks_what_the_or_pool_would(kernel, strides, pads, dilations, unchanged, pattern, rng):
    """Where so few inputs stayed unchanged that the dense rule must hold, the plan marks everything without
    the OR-pool (delta_state.cc dense_rule_certain); everywhere else the OR-pool decides. Either way map_out is
    rule 4 and the dense rule exactly, as the numpy reference computes them."""
    wt = rng.standard_normal((3, 2, *kernel)).astype(np.float32)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations)
    pair = ConvPair(wt, rng.standard_normal(3).astype(np.float32), attrs)
    x = rng.standard_normal((1, 2, 24, 30)).astype(np.float32)
    y, x_ref, _ = pair.run_delta(x, EMPTY, EMPTY)
    keep = np.zeros((24, 30), bool)
    if pattern == "scattered":
        keep.flat[rng.choice(keep.size, int(unchanged * keep.size), replace=False)] = True
    elif pattern == "block":  # one solid region, rows first: the outputs inside it keep their values
        keep.flat[: int(unchanged * keep.size)] = True
    else:  # the pixels a stride-2 window starts on: 3 in 4 inputs change, yet a 1x1 s2 conv keeps everything
        keep[::2, ::2] = True
    x2 = np.where(keep, x, x + 1).astype(np.float32)
    y2, _, marks = pair.run_delta(x2, x_ref, y)
    changed = reference.changed_pixels(x2, x, 0.0)
    expected = reference.apply_dense_fraction(
        reference.output_recompute_mask(changed, (24, 30), marks.shape[2:], kernel, strides, pads, dilations), 0.5)
    np.testing.assert_array_equal(marks[:, 0] != 0, expected)
    assert_close_nan(y2, pair.run_dense(x2))


@pytest.mark.parametrize("one_more", [False, True])
def test_the_or_pool_stops_only_past_the_dense_rule(one_more, rng):
    """The OR-pool stops once more outputs are marked than dense_fraction allows, the plan then marking everything
    (ops/common/change_map.cc or_pool_mask's stop_above). Input rows 1-10 changed mark output rows 0-11 of a 3x3
    conv: exactly half of them, which keeps the exact map (the rows after the bound must still be written: map_out
    is bound to a buffer of marks); one changed pixel more passes the bound, and everything is marked."""
    wt = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    x = rng.standard_normal((1, 2, 24, 30)).astype(np.float32)
    y, x_ref, _ = pair.run_delta(x, EMPTY, EMPTY)
    x2 = x.copy()
    x2[:, :, 1:11] += 1
    if one_more:
        x2[:, :, 13, 0] += 1
    binding = pair.delta.io_binding()
    for name, value in {"x": x2, "x_ref": x_ref, "y_prev": y}.items():
        binding.bind_cpu_input(name, value)
    marks = np.ones((1, 1, 24, 30), np.uint8)
    binding.bind_output("y", "cpu")
    binding.bind_output("x_ref_next", "cpu")
    binding.bind_ortvalue_output("map", ort.OrtValue.ortvalue_from_numpy(marks))
    pair.delta.run_with_iobinding(binding)
    y2 = binding.get_outputs()[0].numpy()
    expected = np.ones((24, 30), bool)
    if not one_more:
        expected[12:] = False
    np.testing.assert_array_equal(binding.get_outputs()[2].numpy()[0, 0] != 0, expected)
    assert_close_nan(y2, pair.run_dense(x2))


def _bind_in_place(sess, binding, feed, state, outputs=("y", "x_ref_next", "map")):
    for name, value in feed.items():
        binding.bind_cpu_input(name, value)
    if state is None:
        binding.bind_ortvalue_input("x_ref", ort.OrtValue.ortvalue_from_numpy(EMPTY))
        binding.bind_ortvalue_input("y_prev", ort.OrtValue.ortvalue_from_numpy(EMPTY))
        for name in outputs:
            binding.bind_output(name, "cpu")
    else:
        binding.bind_ortvalue_input("x_ref", state["x_ref_next"])
        binding.bind_ortvalue_input("y_prev", state["y"])
        for name in outputs:
            binding.bind_ortvalue_output(name, state[name])
    sess.run_with_iobinding(binding)
    return dict(zip(outputs, binding.get_outputs()))


@pytest.mark.sanitizer
@pytest.mark.parametrize("threads", [1, 2])
def test_state_bound_in_place_equals_copies(rng, threads):
    """Past and present on one buffer (IOBinding): same results as separate buffers, same buffers reused."""
    wt = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], pads=[1] * 4, strides=[1, 1])
    pair = ConvPair(wt, rng.standard_normal(16).astype(np.float32), attrs, "SiLU", threshold=0.1, threads=threads)
    binding = pair.delta.io_binding()
    state, x_ref, y_prev = None, EMPTY, EMPTY
    for x in frame_sequence(rng, (1, 8, 30, 40), ["first", "local", "none", "local", "global", "local"]):
        y_copy, x_ref, _ = pair.run_delta(x, x_ref, y_prev)
        y_prev = y_copy
        new = _bind_in_place(pair.delta, binding, {"x": x}, state)
        if state is not None:
            assert new["y"].data_ptr() == state["y"].data_ptr()
            assert new["x_ref_next"].data_ptr() == state["x_ref_next"].data_ptr()
        state = new
        np.testing.assert_array_equal(state["y"].numpy(), y_copy)
        np.testing.assert_array_equal(state["x_ref_next"].numpy(), x_ref)


@pytest.mark.sanitizer
def test_threads_share_a_session_with_separate_states(rng):
    """ORT calls one kernel object from several threads at once: 4 streams on 4 threads equal serial runs."""
    wt = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    pair = ConvPair(wt, None, dict(kernel_shape=[3, 3], pads=[1] * 4), "Relu", threshold=0.05, threads=2)
    streams = [frame_sequence(np.random.default_rng(s), (1, 4, 24, 24), ["first"] + ["local"] * 8) for s in range(4)]

    def run_stream(frames):
        x_ref, y_prev, outs = EMPTY, EMPTY, []
        for x in frames:
            y_prev, x_ref, _ = pair.run_delta(x, x_ref, y_prev)
            outs.append(y_prev)
        return outs

    serial = [run_stream(f) for f in streams]
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run_stream(streams[i]))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(results, serial):
        for ya, yb in zip(a, b):
            np.testing.assert_array_equal(ya, yb)


@pytest.mark.sanitizer
def test_map_union_is_elementwise_or(rng):
    shape = (2, 1, 5, 7)
    maps = [((rng.random(shape) < 0.3) * rng.integers(1, 255)).astype(np.uint8) for _ in range(3)]
    node = helper.make_node("DeltaMapUnion", ["a", "b", "c"], ["u"], domain=DOMAIN)
    sess = op_session(op_model([node], [value_info(n, TensorProto.UINT8) for n in "abc"], [value_info("u", TensorProto.UINT8)]))
    u = sess.run(None, dict(zip("abc", maps)))[0]
    np.testing.assert_array_equal(u, reference.map_union(*maps))
    with pytest.raises(Exception, match="differ in shape"):
        sess.run(None, {"a": maps[0], "b": maps[1], "c": np.zeros((2, 1, 5, 6), np.uint8)})
    # one value per batch item (a squeeze-excite gate's map) marks its item whole, in any position
    gate = np.array([0, 7], np.uint8).reshape(2, 1, 1, 1)
    for feeds in [{"a": maps[0], "b": gate, "c": maps[2]}, {"a": gate, "b": maps[1], "c": maps[2]}]:
        u = sess.run(None, feeds)[0]
        want = reference.map_union(*feeds.values())
        np.testing.assert_array_equal(u, want)
        assert u.shape == shape and u[1].all() and not u[0].all()
    u = sess.run(None, {"a": gate, "b": gate, "c": gate})[0]  # only per-item maps: their own shape
    np.testing.assert_array_equal(u, (gate != 0).astype(np.uint8))
    for bad in [np.zeros((1, 1, 1, 1), np.uint8), np.zeros((2, 1, 1), np.uint8), np.zeros((2, 1, 1, 2), np.uint8)]:
        with pytest.raises(Exception, match="one value per batch item"):
            sess.run(None, {"a": maps[0], "b": bad, "c": maps[2]})


def _conv_node_model(**attrs):
    wt = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w")
    node = helper.make_node("DeltaConv", ["x", "w", "", "x_ref", "y_prev"], ["y", "x_ref_next", "map"],
                            domain=DOMAIN, name="my_conv", **attrs)
    return op_model([node], [value_info("x"), value_info("x_ref"), value_info("y_prev")],
                  [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)], [wt])


@pytest.mark.sanitizer
@pytest.mark.parametrize("attrs, match", [
    (dict(group=3), "group"),
    (dict(activation="Swishy"), "activation"),
    (dict(auto_pad="SAME_MIDDLE"), "auto_pad"),
    (dict(threshold=-1.0), "threshold"),
    (dict(threshold=float("inf")), "threshold"),
    (dict(kernel_shape=[5, 5]), "kernel_shape"),
    (dict(kernel_shape=[3, 3, 3]), "kernel_shape"),
    (dict(strides=[0, 1]), "strides"),
    (dict(pads=[1, 1]), "pads"),
    (dict(dilations=[1, 0]), "dilations"),
    (dict(dense_fraction=1.5), "dense_fraction"),
    (dict(activation="Clip", activation_params=[1.0]), "Clip"),
    (dict(activation="PRelu", activation_params=[0.1, 0.2]), "PRelu"),
])
def test_bad_attributes_are_refused_at_session_creation(attrs, match):
    with pytest.raises(Exception, match=match) as info:
        op_session(_conv_node_model(**attrs))
    assert "my_conv" in str(info.value)


@pytest.mark.sanitizer
def test_bad_pool_attributes_are_refused():
    for attrs, match in [(dict(kernel_shape=[3, 3], storage_order=1), "storage_order"),
                         (dict(kernel_shape=[3]), "kernel_shape"), (dict(kernel_shape=[3, 3], ceil_mode=2), "ceil_mode")]:
        node = helper.make_node("DeltaPool", ["x", "x_ref", "y_prev"], ["y", "x_ref_next", "map"], domain=DOMAIN,
                                name="my_pool", **attrs)
        with pytest.raises(Exception, match=match):
            op_session(op_model([node], [value_info("x"), value_info("x_ref"), value_info("y_prev")],
                            [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]))


@pytest.mark.sanitizer
def test_bad_inputs_give_clear_errors_not_crashes(rng):
    sess = op_session(_conv_node_model(kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    y, xr, _ = sess.run(None, {"x": x, "x_ref": EMPTY, "y_prev": EMPTY})
    cases = [
        ({"x": x, "x_ref": xr, "y_prev": np.zeros((1, 4, 7, 8), np.float32)}, "Y_prev"),
        ({"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32), "x_ref": EMPTY, "y_prev": EMPTY}, "channels"),
        ({"x": rng.standard_normal((2, 8, 8)).astype(np.float32), "x_ref": EMPTY, "y_prev": EMPTY}, "4-D"),
    ]
    for feed, match in cases:
        with pytest.raises(Exception, match=match) as info:
            sess.run(None, feed)
        assert "my_conv" in str(info.value)
    small = op_session(_conv_node_model(kernel_shape=[3, 3]))
    with pytest.raises(Exception, match="smaller than the kernel"):
        small.run(None, {"x": np.zeros((1, 2, 2, 2), np.float32), "x_ref": EMPTY, "y_prev": EMPTY})
    # Empty batch: empty outputs, no crash.
    out = sess.run(None, {"x": np.zeros((0, 2, 8, 8), np.float32), "x_ref": EMPTY, "y_prev": EMPTY})
    assert out[0].shape == (0, 4, 8, 8)


@pytest.mark.sanitizer
def test_wrong_change_map_shape_is_an_error(rng):
    pair = ConvPair(rng.standard_normal((2, 2, 3, 3)).astype(np.float32), None,
                    dict(kernel_shape=[3, 3], pads=[1] * 4), with_map=True)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    with pytest.raises(Exception, match="change map"):
        pair.run_delta(x, EMPTY, EMPTY, np.ones((1, 1, 5, 6), np.uint8))


@pytest.mark.sanitizer
def test_resolution_change_recomputes_everything(rng):
    pair = ConvPair(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), None,
                    dict(kernel_shape=[3, 3], pads=[1] * 4))
    x = rng.standard_normal((1, 2, 10, 12)).astype(np.float32)
    y, xr, _ = pair.run_delta(x, EMPTY, EMPTY)
    x2 = rng.standard_normal((1, 2, 14, 9)).astype(np.float32)
    y2, xr2, m2 = pair.run_delta(x2, xr, y)  # old state of another size: rule 1
    assert m2.all() and xr2.shape == x2.shape
    assert_close_nan(y2, pair.run_dense(x2))


def test_library_reports_its_simd_level():
    from deltaonnx import _native

    variants = _native.simd_variants()
    assert "scalar" in variants and _native.simd_level() in variants
    features = _native.cpu_features()
    assert set(features) >= {"avx2", "avx512", "neon"}
    if features["avx512"]:
        assert "avx512" in variants


@pytest.mark.sanitizer
@pytest.mark.parametrize("simd", ["scalar", "avx2", "avx512"])
def test_every_simd_variant_matches_the_reference(rng, simd):
    """The engines behind the ORT kernels, per SIMD variant, against the numpy reference (tau > 0 and 0)."""
    from deltaonnx import _native

    if simd not in _native.simd_variants():
        pytest.skip(f"{simd} not supported here")
    for (C, M, k, s, d, g, act) in [(5, 19, 3, 1, 1, 1, "SiLU"), (8, 16, 3, 2, 1, 2, "HardSwish"),
                                    (6, 6, 3, 1, 2, 6, "Relu"), (3, 40, 1, 1, 1, 1, "Sigmoid"),
                                    (16, 24, 5, 1, 1, 1, "LeakyRelu"), (4, 21, 3, 1, 1, 1, "Softmax")]:
        wt = rng.standard_normal((M, C // g, k, k)).astype(np.float32)
        b = rng.standard_normal(M).astype(np.float32)
        params = [0.1] if act == "LeakyRelu" else []
        attrs = dict(strides=[s, s], pads=[k // 2] * 4, dilations=[d, d], group=g)
        for tau in (0.0, 0.2):
            x_ref, y_prev = EMPTY, EMPTY
            for x in frame_sequence(rng, (2, C, 23, 37), ["first", "local", "none", "local", "global", "local"]):
                out = _native.delta_conv(x, wt, b, x_ref, y_prev, activation=act, activation_params=params,
                                         threshold=tau, simd=simd, threads=2, **attrs)
                ref = reference.delta_conv(x, wt, b, x_ref, y_prev, activation=act, activation_params=params,
                                           threshold=tau, **attrs)
                np.testing.assert_array_equal(out[1], ref[1])
                np.testing.assert_array_equal(out[2], ref[2])
                np.testing.assert_allclose(out[0], ref[0], rtol=1e-4, atol=1e-4)
                y_prev, x_ref = out[0], out[1]
        # In place: outputs written into the state arrays themselves.
        x = rng.standard_normal((1, C, 23, 37)).astype(np.float32)
        y0, xr0, _ = _native.delta_conv(x, wt, b, EMPTY, EMPTY, simd=simd, **attrs)
        x2 = x.copy()
        x2[..., 3:9, 4:11] += 1
        expect = _native.delta_conv(x2, wt, b, xr0.copy(), y0.copy(), simd=simd, **attrs)
        got = _native.delta_conv(x2, wt, b, xr0, y0, y_out=y0, x_ref_out=xr0, simd=simd, **attrs)
        assert got[0] is not None and np.shares_memory(got[0], y0)
        np.testing.assert_array_equal(y0, expect[0])
        np.testing.assert_array_equal(xr0, expect[1])


def _dropped_reference_model(w, attrs, threshold=0.0, with_map=True):
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w", "", "", "y_prev"] + (["map_in"] if with_map else [])
    node = helper.make_node("DeltaConv", inputs, ["y", "", "map"], domain=DOMAIN, name="no_ref",
                            threshold=threshold, **attrs)
    vis = [value_info("x"), value_info("y_prev")] + ([value_info("map_in", TensorProto.UINT8)] if with_map else [])
    return op_model([node], vis, [value_info("y"), value_info("map", TensorProto.UINT8)], inits)


@pytest.mark.sanitizer
def test_dropped_reference_is_exact_with_a_change_map(rng):
    """No X_ref (threshold 0 behind a change map, docs/design.md#dropped-references): the map's marks are the changes, Y_prev is the
    whole state, and every frame still equals ORT's Conv; the numpy reference agrees."""
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    attrs = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    sess = op_session(_dropped_reference_model(w, attrs))
    dense = ConvPair(w, None, attrs).dense
    y_prev, prev = EMPTY, None
    for x in frame_sequence(rng, (2, 4, 15, 17), ["first", "local", "none", "local", "global", "resize", "local"]):
        map_in = exact_change_map(x, prev)
        y, m = sess.run(None, {"x": x, "y_prev": y_prev, "map_in": map_in})
        np.testing.assert_allclose(y, dense.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
        ry, rx, rm = reference.delta_conv(x, w, None, None, y_prev, map_in, drop_reference=True, **attrs)
        np.testing.assert_array_equal(m, rm)
        assert rx.shape == (0, 0, 0, 0)
        y_prev, prev = y, x


@pytest.mark.sanitizer
def test_dropped_reference_needs_a_map_and_threshold_zero(rng):
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    for threshold, with_map in ((0.1, True), (0.0, False)):
        sess = op_session(_dropped_reference_model(w, dict(kernel_shape=[3, 3]), threshold, with_map))
        feed = {"x": x, "y_prev": EMPTY}
        if with_map:
            feed["map_in"] = np.ones((1, 1, 6, 6), np.uint8)
        with pytest.raises(Exception, match="without an X_ref input"):
            sess.run(None, feed)
