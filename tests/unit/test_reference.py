"""The numpy reference (python/deltaonnx/reference/) against independent oracles: PyTorch and ORT for the
dense ops, a brute-force loop for the receptive-field geometry, and docs/design.md rules 1-5 as invariants on
multi-frame sequences."""
from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from builders import EMPTY
from deltaonnx import reference as ref

torch = pytest.importorskip("torch")
F = torch.nn.functional

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def run_ort_node(op_type: str, inputs: dict[str, np.ndarray], engine: str = "ort", **attrs) -> np.ndarray:
    """Runs one standard ONNX node (opset 17) in ORT, or in onnx's ReferenceEvaluator where ORT lacks a
    feature (dilated SAME convs), and returns its first output."""
    node = helper.make_node(op_type, list(inputs), ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    feeds = {k: v.astype(np.float32) for k, v in inputs.items()}
    if engine == "onnx":
        return onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def brute_force_recompute(changed, out_hw, kernel, strides, pads, dilations) -> np.ndarray:
    """Rule 4 by enumeration: output (oy, ox) is recomputed iff one of its taps reads a changed input."""
    n, h, w = changed.shape
    out = np.zeros((n,) + tuple(out_hw), dtype=bool)
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            for ky in range(kernel[0]):
                iy = oy * strides[0] - pads[0] + ky * dilations[0]
                if not 0 <= iy < h:
                    continue
                for kx in range(kernel[1]):
                    ix = ox * strides[1] - pads[1] + kx * dilations[1]
                    if 0 <= ix < w:
                        out[:, oy, ox] |= changed[:, iy, ix]
    return out


def frame_sequence(rng, shape, n_frames) -> list[np.ndarray]:
    """Frames mixing no change, sub-threshold noise, a moved local patch and sparse large changes."""
    x = rng.standard_normal(shape).astype(np.float32)
    frames = [x]
    n, c, h, w = shape
    for t in range(1, n_frames):
        x = x.copy()
        kind = t % 4
        if kind == 1:  # small noise on half the pixels
            mask = rng.random((n, 1, h, w)) < 0.5
            x += np.where(mask, rng.uniform(-0.05, 0.05, shape), 0).astype(np.float32)
        elif kind == 2:  # a local patch gets new content
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            x[:, :, y0:y0 + 3, x0:x0 + 2] = rng.standard_normal(x[:, :, y0:y0 + 3, x0:x0 + 2].shape)
        elif kind == 3:  # a few pixels change a lot, in one channel only
            for _ in range(2):
                x[rng.integers(0, n), rng.integers(0, c), rng.integers(0, h), rng.integers(0, w)] += 3.0
        frames.append(x)
    return frames


def changed_by_rule_2(X, X_ref, tau) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.any(~(np.abs(X.astype(np.float64) - X_ref) <= tau), axis=1)


@st.composite
def window_cases(draw, *, pool=False):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if pool:  # ORT MaxPool requires pads smaller than the kernel
        pads = tuple(draw(st.integers(0, kernel[a % 2] - 1)) for a in range(4))
    else:
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    reach = [(kernel[a] - 1) * dilations[a] + 1 - pads[a] - pads[a + 2] for a in range(2)]
    h = draw(st.integers(max(1, reach[0]), max(1, reach[0]) + 9))
    w = draw(st.integers(max(1, reach[1]), max(1, reach[1]) + 9))
    return dict(kernel=kernel, strides=strides, dilations=dilations, pads=pads, hw=(h, w))


ACTIVATIONS = [
    ("", []), ("Relu", []), ("LeakyRelu", [0.1]), ("Clip", [0.0, 6.0]), ("Sigmoid", []), ("SiLU", []),
    ("HardSigmoid", [0.2, 0.5]), ("HardSwish", []), ("PRelu", [0.25]), ("Tanh", []), ("Softmax", []),
]


# ------------------------------------------------------------------------------------------------
# dense ops against PyTorch and ORT
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(case=window_cases(), group=st.sampled_from([1, 2, 3]), c_per_group=st.integers(1, 3),
       m_per_group=st.integers(1, 3), n=st.integers(1, 2), bias=st.booleans(), seed=st.integers(0, 2**31))
def test_conv2d_matches_torch(case, group, c_per_group, m_per_group, n, bias, seed):
    rng = np.random.default_rng(seed)
    c, m = c_per_group * group, m_per_group * group
    X = rng.standard_normal((n, c) + case["hw"]).astype(np.float32)
    W = rng.standard_normal((m, c_per_group) + case["kernel"]).astype(np.float32)
    B = rng.standard_normal(m).astype(np.float32) if bias else None
    got = ref.conv2d(X, W, B, strides=case["strides"], pads=case["pads"], dilations=case["dilations"], group=group)
    top, left, bottom, right = case["pads"]
    xt = F.pad(torch.from_numpy(X).double(), (left, right, top, bottom))
    want = F.conv2d(xt, torch.from_numpy(W).double(), None if B is None else torch.from_numpy(B).double(),
                    stride=case["strides"], dilation=case["dilations"], groups=group).float().numpy()
    assert got.dtype == np.float32
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(case=window_cases(), auto_pad=st.sampled_from(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
       seed=st.integers(0, 2**31))
def test_conv2d_and_resolve_pads_match_onnx_runtimes(case, auto_pad, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((1, 2) + case["hw"]).astype(np.float32)
    W = rng.standard_normal((3, 2) + case["kernel"]).astype(np.float32)
    attrs = dict(kernel_shape=case["kernel"], strides=case["strides"], dilations=case["dilations"], auto_pad=auto_pad)
    if auto_pad == "NOTSET":
        attrs["pads"] = case["pads"]
    elif auto_pad == "VALID":
        reach = [(case["kernel"][a] - 1) * case["dilations"][a] + 1 for a in range(2)]
        assume(case["hw"][0] >= reach[0] and case["hw"][1] >= reach[1])
    # ORT refuses dilation with SAME_*: onnx's own reference is the oracle there
    engine = "onnx" if auto_pad.startswith("SAME") and case["dilations"] != (1, 1) else "ort"
    want = run_ort_node("Conv", {"X": X, "W": W}, engine, **attrs)
    pads = ref.resolve_pads(case["hw"], case["kernel"], case["strides"], case["dilations"],
                            attrs.get("pads"), auto_pad)
    got = ref.conv2d(X, W, strides=case["strides"], pads=pads, dilations=case["dilations"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(case=window_cases(pool=True), ceil_mode=st.sampled_from([0, 1]), seed=st.integers(0, 2**31))
def test_maxpool2d_matches_ort(case, ceil_mode, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, 3) + case["hw"]).astype(np.float32) - 5.0  # all negative: padding must not win
    want = run_ort_node("MaxPool", {"X": X}, kernel_shape=case["kernel"], strides=case["strides"],
                        dilations=case["dilations"], pads=case["pads"], ceil_mode=ceil_mode)
    got = ref.maxpool2d(X, kernel_shape=case["kernel"], strides=case["strides"], pads=case["pads"],
                        dilations=case["dilations"], ceil_mode=ceil_mode)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(k=st.integers(1, 5), s=st.integers(1, 3), d=st.integers(1, 2), ceil_mode=st.booleans(),
       hw=st.tuples(st.integers(9, 16), st.integers(9, 16)), seed=st.integers(0, 2**31))
def test_maxpool2d_matches_torch(k, s, d, ceil_mode, hw, seed):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, k // 2 + 1)  # torch: symmetric pads of at most half the kernel
    X = rng.standard_normal((1, 2) + hw).astype(np.float32) - 5.0
    want = F.max_pool2d(torch.from_numpy(X), k, s, int(p), d, ceil_mode=ceil_mode).numpy()
    got = ref.maxpool2d(X, kernel_shape=(k, k), strides=(s, s), pads=(p,) * 4, dilations=(d, d), ceil_mode=int(ceil_mode))
    np.testing.assert_array_equal(got, want)


def test_maxpool2d_window_of_padding_only_gives_lowest_float_like_ort():
    attrs = dict(kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[3, 3])  # taps at -1 and 2
    X = np.ones((1, 1, 2, 2), np.float32)
    want = run_ort_node("MaxPool", {"X": X}, **attrs)
    np.testing.assert_array_equal(ref.maxpool2d(X, **attrs), want)
    assert want.ravel()[0] == np.finfo(np.float32).min


def test_resolve_pads_rules():
    assert ref.resolve_pads((7, 8), (3, 3), (2, 2), (1, 1), None, "SAME_UPPER") == (1, 0, 1, 1)
    assert ref.resolve_pads((7, 8), (3, 3), (2, 2), (1, 1), None, "SAME_LOWER") == (1, 1, 1, 0)
    assert ref.resolve_pads((7, 8), (3, 3), (2, 2), (1, 1), [1, 2, 3, 4], "VALID") == (0, 0, 0, 0)
    assert ref.resolve_pads((7, 8), (3, 3), (1, 1), (1, 1), [1, 2, 3, 4], "NOTSET") == (1, 2, 3, 4)
    assert ref.resolve_pads((7, 8), (3, 3), (1, 1), (1, 1), None, "NOTSET") == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="auto_pad"):
        ref.resolve_pads((7, 8), (3, 3), (1, 1), (1, 1), None, "SAME")


@pytest.mark.parametrize("name,params", ACTIVATIONS + [("PRelu", "per_channel")])
def test_activation_matches_torch(name, params, rng):
    x = np.concatenate([np.linspace(-8, 8, 161), rng.standard_normal(31) * 4]).astype(np.float32)
    x = x[: 4 * 48].reshape(1, 4, 6, 8)
    xt = torch.from_numpy(x)
    if params == "per_channel":
        params = [0.1, -0.2, 0.3, 2.0]
        want = F.prelu(xt, torch.tensor(params))
    else:
        want = {
            "": lambda t: t, "Relu": F.relu, "LeakyRelu": lambda t: F.leaky_relu(t, 0.1),
            "Clip": lambda t: torch.clamp(t, 0.0, 6.0), "Sigmoid": torch.sigmoid, "SiLU": F.silu,
            "HardSigmoid": lambda t: torch.clamp(0.2 * t + 0.5, 0, 1), "HardSwish": F.hardswish,
            "PRelu": lambda t: F.prelu(t, torch.tensor([0.25])), "Tanh": torch.tanh,
            "Softmax": lambda t: torch.softmax(t, dim=1),
        }[name](xt)
    got = ref.activation(x, name, params)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)


def test_activation_defaults_and_errors():
    x = np.array([-10.0, -1.0, 0.0, 1.0, 10.0], dtype=np.float32).reshape(1, 5, 1, 1)
    np.testing.assert_allclose(ref.activation(x, "LeakyRelu", []).ravel(), [-0.1, -0.01, 0, 1, 10], rtol=1e-6)
    np.testing.assert_allclose(ref.activation(x, "HardSigmoid", []).ravel(), [0, 0.3, 0.5, 0.7, 1], rtol=1e-6)
    np.testing.assert_array_equal(ref.activation(x, "Relu6", []).ravel(), [0, 0, 0, 1, 6])
    assert np.isnan(ref.activation(np.array([np.nan], np.float32), "Relu", [])[0])  # NaN stays visible
    with pytest.raises(ValueError, match="unknown activation"):
        ref.activation(x, "Gelu", [])
    with pytest.raises(ValueError, match="PRelu"):
        ref.activation(x, "PRelu", [0.1, 0.2])


# ------------------------------------------------------------------------------------------------
# rules 1-5 on sequences
# ------------------------------------------------------------------------------------------------

@SETTINGS
@given(case=window_cases(), group=st.sampled_from([1, 2]), act=st.sampled_from(ACTIVATIONS),
       tau=st.sampled_from([0.0, 0.03, 0.3]), dense_fraction=st.sampled_from([0.5, 1.0]),
       seed=st.integers(0, 2**31))
def test_delta_conv_invariants_on_a_sequence(case, group, act, tau, dense_fraction, seed):
    rng = np.random.default_rng(seed)
    n, c, m = 2, 2 * group, 2 * group
    W = rng.standard_normal((m, c // group) + case["kernel"]).astype(np.float32)
    B = rng.standard_normal(m).astype(np.float32)
    attrs = dict(strides=case["strides"], pads=case["pads"], dilations=case["dilations"], group=group,
                 activation=act[0], activation_params=act[1], threshold=tau, dense_fraction=dense_fraction)
    geometry = dict(strides=case["strides"], pads=case["pads"], dilations=case["dilations"])

    def dense(x):
        return ref.activation(ref.conv2d(x, W, B, group=group, **geometry), act[0], act[1])

    x_ref, y_prev = EMPTY, EMPTY
    for t, X in enumerate(frame_sequence(rng, (n, c) + case["hw"], 8)):
        Y, x_ref_next, map_out = ref.delta_conv(X, W, B, x_ref, y_prev, **attrs)
        assert Y.dtype == np.float32 and x_ref_next.dtype == np.float32 and map_out.dtype == np.uint8
        assert map_out.shape == (n, 1) + Y.shape[2:]
        # rule 5: Y is the activation of the conv of the new reference, everywhere
        np.testing.assert_array_equal(Y, dense(x_ref_next))
        assert np.max(np.abs(X - x_ref_next)) <= tau
        if tau == 0:
            np.testing.assert_array_equal(Y, dense(X))
        if t == 0:
            assert map_out.all()
        else:
            # rules 2-4: the reference moves exactly where the pixel changed; the map is the OR-pool
            changed = changed_by_rule_2(X, x_ref, tau)
            np.testing.assert_array_equal(x_ref_next, np.where(changed[:, None], X, x_ref))
            expected = brute_force_recompute(changed, Y.shape[2:], case["kernel"], **geometry)
            for i in range(n):
                if expected[i].mean() > dense_fraction:
                    expected[i] = True
            np.testing.assert_array_equal(map_out[:, 0], expected.astype(np.uint8))
            assert np.all(map_out[:, 0][np.any(Y != y_prev, axis=1)] == 1)  # map covers every changed value
        x_ref, y_prev = x_ref_next, Y


@SETTINGS
@given(case=window_cases(pool=True), ceil_mode=st.sampled_from([0, 1]), tau=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 2**31))
def test_delta_pool_invariants_on_a_sequence(case, ceil_mode, tau, seed):
    rng = np.random.default_rng(seed)
    attrs = dict(kernel_shape=case["kernel"], strides=case["strides"], pads=case["pads"],
                 dilations=case["dilations"], ceil_mode=ceil_mode)
    x_ref, y_prev = EMPTY, EMPTY
    for t, X in enumerate(frame_sequence(rng, (1, 3) + case["hw"], 8)):
        Y, x_ref_next, map_out = ref.delta_pool(X, x_ref, y_prev, threshold=tau, dense_fraction=1.0, **attrs)
        np.testing.assert_array_equal(Y, ref.maxpool2d(x_ref_next, **attrs))
        assert np.max(np.abs(X - x_ref_next)) <= tau
        if tau == 0:
            np.testing.assert_array_equal(Y, run_ort_node("MaxPool", {"X": X}, **attrs))
        if t > 0:
            changed = changed_by_rule_2(X, x_ref, tau)
            expected = brute_force_recompute(changed, Y.shape[2:], case["kernel"], case["strides"],
                                             case["pads"], case["dilations"])
            np.testing.assert_array_equal(map_out[:, 0], expected.astype(np.uint8))
        x_ref, y_prev = x_ref_next, Y


def test_slow_drift_below_tau_triggers_once_it_adds_up():
    W = np.ones((1, 1, 1, 1), np.float32)
    X0 = np.zeros((1, 1, 4, 4), np.float32)
    tau = 0.1
    Y, x_ref, _ = ref.delta_conv(X0, W, None, EMPTY, EMPTY, threshold=tau)
    recomputed_at = []
    for t in range(1, 6):
        X = X0.copy()
        X[0, 0, 1, 2] = 0.04 * t
        Y, x_ref, map_out = ref.delta_conv(X, W, None, x_ref, Y, threshold=tau)
        if map_out.any():
            recomputed_at.append(t)
            assert map_out.sum() == 1 and map_out[0, 0, 1, 2] == 1
    assert recomputed_at == [3]  # 0.12 > 0.1; after it the reference sits at 0.12 and 0.16, 0.20 stay within tau


def test_dense_fraction_recomputes_the_whole_item():
    W = np.ones((1, 1, 3, 3), np.float32)
    X = np.zeros((2, 1, 6, 6), np.float32)
    Y, x_ref, _ = ref.delta_conv(X, W, None, EMPTY, EMPTY, pads=[1, 1, 1, 1])
    X2 = X.copy()
    X2[0, 0, 0, 0] = 1.0  # item 0: 4 of 36 outputs; item 1: unchanged
    _, _, sparse = ref.delta_conv(X2, W, None, x_ref, Y, pads=[1, 1, 1, 1], dense_fraction=0.5)
    assert sparse[0].sum() == 4 and sparse[1].sum() == 0
    _, _, dense = ref.delta_conv(X2, W, None, x_ref, Y, pads=[1, 1, 1, 1], dense_fraction=0.1)
    assert dense[0].all() and not dense[1].any()  # per batch item; 0 changed never goes dense
    _, _, never = ref.delta_conv(X2, W, None, x_ref, Y, pads=[1, 1, 1, 1], dense_fraction=0.0)
    assert never[0].all() and not never[1].any()


# ------------------------------------------------------------------------------------------------
# NaN/Inf, change maps, resets, errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_value,ref_value", [(np.nan, 1.0), (1.0, np.nan), (np.nan, np.nan),
                                               (np.inf, np.inf), (-np.inf, 1.0), (np.inf, -np.inf)])
def test_nan_and_inf_never_hide_a_change(x_value, ref_value):
    X_ref = np.zeros((1, 2, 3, 3), np.float32)
    X = X_ref.copy()
    X[0, 1, 1, 1], X_ref[0, 1, 1, 1] = x_value, ref_value
    changed = ref.changed_pixels(X, X_ref, tau=1e30)
    assert changed[0, 1, 1] and changed.sum() == 1

    W = np.ones((1, 2, 1, 1), np.float32)
    Y_prev = np.zeros((1, 1, 3, 3), np.float32)
    Y, x_ref_next, map_out = ref.delta_conv(X, W, None, X_ref, Y_prev, threshold=1e30)
    assert map_out[0, 0, 1, 1] == 1 and map_out.sum() == 1
    np.testing.assert_array_equal(x_ref_next, X)
    np.testing.assert_array_equal(Y, ref.conv2d(X, W))


def test_nan_in_the_input_propagates_and_keeps_recomputing():
    W = np.ones((1, 1, 3, 3), np.float32)
    X = np.zeros((1, 1, 5, 5), np.float32)
    X[0, 0, 2, 2] = np.nan
    Y, x_ref, _ = ref.delta_conv(X, W, None, EMPTY, EMPTY)
    assert np.isnan(Y).all()
    Y2, _, map_out = ref.delta_conv(X, W, None, x_ref, Y)  # the same frame again: NaN != NaN
    assert map_out.all()
    np.testing.assert_array_equal(Y2, Y)


def test_map_in_limits_the_change_test_to_marked_pixels():
    W = np.ones((1, 1, 1, 1), np.float32)
    X_ref = np.zeros((1, 1, 4, 4), np.float32)
    Y_prev = np.full((1, 1, 4, 4), 7.0, np.float32)
    X = np.full((1, 1, 4, 4), 5.0, np.float32)  # every pixel changed by 5
    map_in = np.zeros((1, 1, 4, 4), np.uint8)
    map_in[0, 0, 0, :2] = 1
    map_in[0, 0, 3, 3] = 255  # any nonzero value marks
    Y, x_ref_next, map_out = ref.delta_conv(X, W, None, X_ref, Y_prev, map_in, dense_fraction=1.0)
    np.testing.assert_array_equal(map_out, (map_in != 0).astype(np.uint8))
    np.testing.assert_array_equal(x_ref_next, np.where(map_in != 0, X, X_ref))
    np.testing.assert_array_equal(Y, np.where(map_in != 0, 5.0, 7.0))
    # a marked pixel that did not change stays unchanged
    _, _, quiet = ref.delta_conv(X_ref, W, None, X_ref, Y_prev, map_in)
    assert not quiet.any()
    with pytest.raises(ValueError, match="map_in"):
        ref.delta_conv(X, W, None, X_ref, Y_prev, map_in[:, :, :3])


def test_map_in_with_empty_state_still_recomputes_everything():
    W = np.ones((1, 1, 1, 1), np.float32)
    X = np.ones((1, 1, 4, 4), np.float32)
    Y, _, map_out = ref.delta_conv(X, W, None, EMPTY, EMPTY, np.zeros((1, 1, 4, 4), np.uint8))
    assert map_out.all()
    np.testing.assert_array_equal(Y, X)


def test_resolution_change_recomputes_everything_without_reading_y_prev(rng):
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    small = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    Y, x_ref, _ = ref.delta_conv(small, W, None, EMPTY, EMPTY, pads=[1, 1, 1, 1])
    large = rng.standard_normal((1, 2, 8, 10)).astype(np.float32)
    Y2, x_ref2, map_out = ref.delta_conv(large, W, None, x_ref, Y, pads=[1, 1, 1, 1])
    assert Y2.shape == (1, 3, 8, 10) and map_out.shape == (1, 1, 8, 10) and map_out.all()
    np.testing.assert_array_equal(x_ref2, large)
    np.testing.assert_array_equal(Y2, ref.conv2d(large, W, pads=[1, 1, 1, 1]))
    Yp, _, pool_map = ref.delta_pool(large, x_ref, Y, kernel_shape=[2, 2], strides=[2, 2])
    assert pool_map.all() and Yp.shape == (1, 2, 4, 5)


def test_wrong_y_prev_shape_raises(rng):
    W = np.ones((2, 1, 3, 3), np.float32)
    X = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    Y, x_ref, _ = ref.delta_conv(X, W, None, EMPTY, EMPTY)
    for bad in (Y[:, :1], EMPTY, Y[..., :-1]):
        with pytest.raises(ValueError, match="Y_prev"):
            ref.delta_conv(X, W, None, x_ref, bad)
    Yp, xp, _ = ref.delta_pool(X, EMPTY, EMPTY, kernel_shape=[2, 2])
    with pytest.raises(ValueError, match="Y_prev"):
        ref.delta_pool(X, xp, Yp[..., 1:], kernel_shape=[2, 2])


def test_bad_attributes_raise():
    X = np.zeros((1, 1, 4, 4), np.float32)
    W = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="threshold"):
        ref.delta_conv(X, W, None, EMPTY, EMPTY, threshold=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        ref.delta_conv(X, W, None, EMPTY, EMPTY, threshold=float("nan"))
    with pytest.raises(ValueError, match="storage_order"):
        ref.delta_pool(X, EMPTY, EMPTY, kernel_shape=[2, 2], storage_order=1)
    with pytest.raises(ValueError, match="kernel_shape"):
        ref.delta_conv(X, W, None, EMPTY, EMPTY, kernel_shape=[2, 2])


def test_map_union():
    a = np.array([0, 1, 0, 3], np.uint8).reshape(1, 1, 2, 2)
    b = np.array([0, 0, 2, 0], np.uint8).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(ref.map_union(a, b).ravel(), [0, 1, 1, 1])
    assert ref.map_union(a, b).dtype == np.uint8
    with pytest.raises(ValueError, match="shape"):
        ref.map_union(a, b[..., :1])


def test_output_recompute_mask_matches_brute_force(rng):
    changed = rng.random((2, 11, 9)) < 0.1
    kernel, strides, dilations = (3, 2), (2, 3), (2, 1)
    pads = ref.resolve_pads((11, 9), kernel, strides, dilations, None, "SAME_LOWER")
    out_hw = ref.conv2d(np.zeros((1, 1, 11, 9), np.float32), np.zeros((1, 1) + kernel, np.float32),
                        strides=strides, pads=pads, dilations=dilations).shape[2:]
    got = ref.output_recompute_mask(changed, (11, 9), out_hw, kernel, strides, pads, dilations)
    np.testing.assert_array_equal(got, brute_force_recompute(changed, out_hw, kernel, strides, pads, dilations))
    with pytest.raises(ValueError, match="out_hw"):
        ref.output_recompute_mask(changed, (11, 9), (1, 1), kernel, strides, pads, dilations)


# ------------------------------------------------------------------------------------------------
# whole converted models through onnx.reference.ReferenceEvaluator
# ------------------------------------------------------------------------------------------------

def tiny_converted_model(with_bias: bool) -> onnx.ModelProto:
    """X -> DeltaConv(3x3, Relu) -> DeltaPool(2x2) -> Y, the pool fed the conv's change map, and a
    DeltaMapUnion of the two maps, wired as docs/state_protocol.md describes (hand-built: the converter
    is tested elsewhere)."""
    rng = np.random.default_rng(3)
    W = onnx.numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "W")
    inits = [W]
    b_name = ""
    if with_bias:
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B"))
        b_name = "B"
    conv = helper.make_node(
        "DeltaConv", ["X", "W", b_name, "past.conv.x_ref", "past.conv.y"],
        ["conv_y", "present.conv.x_ref", "map.conv"], domain=ref.DOMAIN, name="DeltaConv_0",
        kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Relu", threshold=0.0)
    pool = helper.make_node(
        "DeltaPool", ["conv_y", "past.pool.x_ref", "past.pool.y", "map.conv"],
        ["Y", "present.pool.x_ref", "map.pool"], domain=ref.DOMAIN, name="DeltaPool_0",
        kernel_shape=[2, 2], strides=[2, 2])
    union = helper.make_node("DeltaMapUnion", ["map.pool", "map.pool"], ["map.union"], domain=ref.DOMAIN)
    state = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    graph = helper.make_graph(
        [conv, pool, union], "tiny_delta",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 8, 8])]
        + [state(n) for n in ("past.conv.x_ref", "past.conv.y", "past.pool.x_ref", "past.pool.y")],
        [state(n) for n in ("Y", "present.conv.x_ref", "conv_y", "present.pool.x_ref")]
        + [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in ("map.conv", "map.pool", "map.union")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ref.DOMAIN, 1)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("with_bias", [False, True])
def test_reference_evaluator_runs_a_converted_model(with_bias, rng):
    model = tiny_converted_model(with_bias)
    evaluator = ref.make_reference_evaluator(model)
    W = onnx.numpy_helper.to_array(model.graph.initializer[0])
    B = onnx.numpy_helper.to_array(model.graph.initializer[1]) if with_bias else None
    state = {n: EMPTY for n in ("past.conv.x_ref", "past.conv.y", "past.pool.x_ref", "past.pool.y")}
    names = [o.name for o in model.graph.output]
    for t, X in enumerate(frame_sequence(rng, (1, 2, 8, 8), 6)):
        out = dict(zip(names, evaluator.run(None, {"X": X, **state})))
        dense = ref.maxpool2d(ref.activation(ref.conv2d(X, W, B, pads=[1, 1, 1, 1]), "Relu"),
                              kernel_shape=[2, 2], strides=[2, 2])
        np.testing.assert_array_equal(out["Y"], dense)
        assert out["map.pool"].shape == (1, 1, 4, 4) and out["map.union"].dtype == np.uint8
        np.testing.assert_array_equal(out["map.union"], out["map.pool"])
        if t % 4 == 0:  # frames 0 (empty state) and 4 (no change) of frame_sequence
            assert out["map.pool"].all() == (t == 0) and out["map.pool"].any() == (t == 0)
        state = {"past.conv.x_ref": out["present.conv.x_ref"], "past.conv.y": out["conv_y"],
                 "past.pool.x_ref": out["present.pool.x_ref"], "past.pool.y": out["Y"]}


@pytest.mark.parametrize("name", ["cnn1", "nhwc_input", "yolov8_like"])
@pytest.mark.parametrize("threshold, gate", [(0.0, "block"), (0.05, "block"), (0.05, "pixel")])
def test_reference_evaluator_runs_converter_output(name, threshold, gate, cpu_op_library):
    """The evaluator runs what deltaonnx.convert produces: at tau 0 it equals dense ORT on every frame of
    a sequence; at tau 0.05 it agrees with the C++ ops (the same rules, other summation order), with either
    input gate."""
    import json

    zoo = pytest.importorskip("zoo")
    import synthetic_video

    import deltaonnx

    if not hasattr(deltaonnx, "convert"):
        pytest.skip("deltaonnx.convert is not available")
    model = zoo.BUILDERS[name]()
    converted = deltaonnx.convert(model, threshold=threshold, all_nodes=True, gate=gate)
    meta = json.loads({p.key: p.value for p in converted.metadata_props}["deltaonnx"])
    no_maps = {g["change_map"]: np.zeros((0, 1, 0, 0), np.uint8) for g in meta["gates"]}  # block gate: no map
    evaluator = ref.make_reference_evaluator(converted)
    options = ort.SessionOptions()
    options.register_custom_ops_library(cpu_op_library)
    delta = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = dense.get_inputs()
    own_outputs = [o.name for o in dense.get_outputs()]
    names = [o.name for o in converted.graph.output]
    assert [o.name for o in delta.get_outputs()] == names
    layout = "NHWC" if inp.shape[-1] == 3 else "NCHW"
    ref_state = ort_state = None
    for frame in synthetic_video.sequence(inp.shape, 10, seed=4, layout=layout):
        if frame.reset:
            ref_state = ort_state = {**no_maps, **{s["past"]: EMPTY for s in meta["state"]}}
        ref_out = dict(zip(names, evaluator.run(None, {inp.name: frame.data, **ref_state})))
        ort_out = dict(zip(names, delta.run(None, {inp.name: frame.data, **ort_state})))
        for output, want in zip(own_outputs, dense.run(None, {inp.name: frame.data})):
            np.testing.assert_allclose(ref_out[output], ort_out[output], rtol=1e-4, atol=1e-4)
            if threshold == 0:
                np.testing.assert_allclose(ref_out[output], want, rtol=1e-5, atol=1e-5)
        if frame.kind == "static":  # nothing changed: nothing recomputed anywhere
            assert not any(ref_out[m["output"]].any() for m in meta["maps"])
        ref_state = {**no_maps, **{s["past"]: ref_out[s["present"]] for s in meta["state"]}}
        ort_state = {**no_maps, **{s["past"]: ort_out[s["present"]] for s in meta["state"]}}


def test_grouped_softmax_normalises_each_group_of_channels():
    """activation Softmax [G]: each group of G consecutive channels of a pixel sums to 1 and equals torch's softmax
    over the grouped view; params that are not a positive integer dividing the channels are refused."""
    x = np.random.default_rng(7).standard_normal((2, 12, 3, 5)).astype(np.float32)
    got = ref.activation(x, "Softmax", [4.0])
    want = torch.softmax(torch.from_numpy(x).reshape(2, 3, 4, 3, 5), dim=2).reshape(x.shape).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref.activation(x, "Softmax", [12.0]), ref.activation(x, "Softmax", []), rtol=0, atol=0)
    for bad in ([5.0], [0.0], [-4.0], [2.5], [4.0, 4.0]):
        with pytest.raises(ValueError, match="Softmax takes activation_params"):
            ref.activation(x, "Softmax", bad)
