"""Padded channel blocks in the numpy reference (docs/ops.md#blocked-layout): to_blocked / from_blocked with
channel counts that are no multiple of b, and DeltaConv / DeltaPool / DeltaReorder on blocked tensors against
the same ops in NCHW, the pad lanes exactly zero. Numpy alone: no op library."""
from __future__ import annotations

import numpy as np
import pytest

from builders import EMPTY
from deltaonnx import reference as ref

BLOCKS = (1, 4, 8, 16)
CHANNELS = (3, 8, 24, 40, 72)


def frames(rng, shape, count):
    """A first frame, then frames changing a random patch each (and one frame changing everything)."""
    x = rng.standard_normal(shape).astype(np.float32)
    yield x.copy()
    for t in range(1, count):
        if t == count - 1:
            x = rng.standard_normal(shape).astype(np.float32)
        else:
            i, j = rng.integers(0, shape[2] - 2), rng.integers(0, shape[3] - 2)
            x[:, :, i:i + 2, j:j + 2] = rng.standard_normal((shape[0], shape[1], 2, 2))
        yield x.copy()


def pad_lanes(x, b, channels):
    """The pad lanes (channels C..Cb-1) of a blocked tensor, read through its memory order."""
    n, cb, h, w = x.shape
    return ref.from_blocked(x, b)[:, channels:]


@pytest.mark.parametrize("b", BLOCKS)
@pytest.mark.parametrize("c", CHANNELS)
def test_to_blocked_pads_with_zeros_and_from_blocked_crops(b, c, rng):
    x = rng.standard_normal((2, c, 3, 5)).astype(np.float32)
    xb = ref.to_blocked(x, b)
    cb = ref.padded_channels(c, b)
    assert cb % b == 0 and c <= cb < c + b and xb.shape == (2, cb, 3, 5)
    memory = xb.reshape(2, cb // b, 3, 5, b)  # [N][Cb/b][H][W][b]
    for ch in range(cb):
        expected = x[:, ch] if ch < c else 0
        np.testing.assert_array_equal(memory[:, ch // b, :, :, ch % b], expected)
    np.testing.assert_array_equal(ref.from_blocked(xb, b, c), x)
    assert ref.from_blocked(xb, b).shape == (2, cb, 3, 5)
    if cb != c:
        with pytest.raises(ValueError, match="channels"):
            ref.from_blocked(xb, b, c + b)  # roundup(c + b, b) != cb


def conv_case(rng, c, m, depthwise):
    if depthwise:
        w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
        return w, rng.standard_normal(c).astype(np.float32), dict(group=c, pads=[1, 1, 1, 1])
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    return w, rng.standard_normal(m).astype(np.float32), dict(group=1, pads=[1, 1, 1, 1])


@pytest.mark.parametrize("b", (4, 8, 16))
@pytest.mark.parametrize("layout,c,m,depthwise", [
    ("blocked", 8, 24, False), ("blocked", 24, 40, False), ("blocked", 40, 8, False), ("blocked", 72, 72, True),
    ("blocked", 24, 24, True), ("blocked_out", 3, 24, False), ("blocked_out", 3, 8, False)])
def test_delta_conv_on_padded_blocks_matches_nchw(b, layout, c, m, depthwise, rng):
    w, bias, geometry = conv_case(rng, c, m, depthwise)
    attrs = dict(activation="Relu", **geometry)
    state_n, state_b = (EMPTY, EMPTY), (EMPTY, EMPTY)
    blocked_in = layout == "blocked"
    for t, x in enumerate(frames(rng, (2, c, 8, 9), 5)):
        y_n, ref_n, map_n = ref.delta_conv(x, w, bias, *state_n, **attrs)
        xb = ref.to_blocked(x, b) if blocked_in else x
        y_b, ref_b, map_b = ref.delta_conv(xb, w, bias, *state_b, layout=layout, channel_block=b, **attrs)
        m_out = w.shape[0]
        assert y_b.shape == (2, ref.padded_channels(m_out, b), 8, 9)
        np.testing.assert_array_equal(ref.from_blocked(y_b, b, m_out), y_n, err_msg=f"frame {t}")
        np.testing.assert_array_equal(map_b, map_n, err_msg=f"frame {t}")
        assert not pad_lanes(y_b, b, m_out).any(), "Y's pad lanes must be zero"
        if blocked_in:
            np.testing.assert_array_equal(ref.from_blocked(ref_b, b, c), ref_n)
            assert not pad_lanes(ref_b, b, c).any(), "X_ref's pad lanes must be zero"
        else:
            np.testing.assert_array_equal(ref_b, ref_n)
        state_n, state_b = (ref_n, y_n), (ref_b, y_b)


def test_blocked_x_of_the_wrong_channel_count_is_refused(rng):
    w = rng.standard_normal((8, 24, 1, 1)).astype(np.float32)
    x = rng.standard_normal((1, 24, 4, 4)).astype(np.float32)  # NCHW 24 where b = 16 needs 32
    with pytest.raises(ValueError, match="channels"):
        ref.delta_conv(x, w, layout="blocked", channel_block=16)


def test_state_of_another_block_is_no_state(rng):
    """24 channels are 24 under b = 1 or 8 and 32 under b = 16: a b = 1 state fed to b = 16 must recompute
    everything (rule 1), though cropping the blocked X to 24 channels makes it look like X's."""
    w = rng.standard_normal((24, 24, 1, 1)).astype(np.float32)
    x = rng.standard_normal((1, 24, 4, 4)).astype(np.float32)
    y1, ref1, _ = ref.delta_conv(x, w, layout="blocked", channel_block=1)
    np.testing.assert_array_equal(ref1, x)  # b = 1: blocked memory is NCHW
    y16, _, map16 = ref.delta_conv(ref.to_blocked(x, 16), w, None, ref1, np.zeros_like(y1), layout="blocked",
                                   channel_block=16)
    assert map16.all()
    np.testing.assert_array_equal(ref.from_blocked(y16, 16, 24), y1)


@pytest.mark.parametrize("act,params", [("Sigmoid", ()), ("HardSigmoid", ()), ("Clip", (0.5, 6.0)),
                                        ("Softmax", ())])
def test_padded_output_with_a_nonzero_act_of_zero_is_refused(act, params, rng):
    w = rng.standard_normal((24, 8, 1, 1)).astype(np.float32)
    x = rng.standard_normal((1, 8, 4, 4)).astype(np.float32)
    kwargs = dict(activation=act, activation_params=params, channel_block=8)
    ref.delta_conv(ref.to_blocked(x, 8), w, layout="blocked", **kwargs)  # 24 = 3 blocks of 8: nothing padded
    with pytest.raises(ValueError, match=r"act\(0\) != 0"):
        ref.delta_conv(ref.to_blocked(x, 16), w, layout="blocked", **dict(kwargs, channel_block=16))


@pytest.mark.parametrize("b", BLOCKS)
def test_delta_pool_on_padded_blocks_pools_zero_pad_lanes(b, rng):
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    state_n, state_b = (EMPTY, EMPTY), (EMPTY, EMPTY)
    for x in frames(rng, (1, 24, 9, 8), 4):
        y_n, ref_n, _ = ref.delta_pool(x, *state_n, **attrs)
        y_b, ref_b, _ = ref.delta_pool(ref.to_blocked(x, b), *state_b, layout="blocked", channel_block=b, **attrs)
        np.testing.assert_array_equal(ref.from_blocked(y_b, b, 24), y_n)
        assert not pad_lanes(y_b, b, 24).any()
        state_n, state_b = (ref_n, y_n), (ref_b, y_b)


@pytest.mark.parametrize("b", BLOCKS)
@pytest.mark.parametrize("c", CHANNELS)
def test_delta_reorder_round_trip_with_channels(b, c, rng):
    x = rng.standard_normal((2, c, 4, 3)).astype(np.float32)
    xb = ref.delta_reorder(x, to="blocked", block=b, channels=c)
    np.testing.assert_array_equal(xb, ref.to_blocked(x, b))
    np.testing.assert_array_equal(ref.delta_reorder(x, to="blocked", block=b), xb)  # channels defaults to X's
    np.testing.assert_array_equal(ref.delta_reorder(xb, to="nchw", block=b, channels=c), x)
    # without channels: C = X's count, the pad lanes (zero) kept
    np.testing.assert_array_equal(ref.delta_reorder(xb, to="nchw", block=b), ref.from_blocked(xb, b))
    with pytest.raises(ValueError, match="channels"):
        ref.delta_reorder(x, to="blocked", block=b, channels=c + 1)


@pytest.mark.parametrize("to", ("blocked", "nchw"))
def test_delta_reorder_keeps_unmarked_pixels_of_y_prev_of_y_shape(to, rng):
    b, c = 16, 24
    x_nchw = rng.standard_normal((1, c, 4, 4)).astype(np.float32)
    y_prev_nchw = rng.standard_normal((1, c, 4, 4)).astype(np.float32)
    x = x_nchw if to == "blocked" else ref.to_blocked(x_nchw, b)
    y_prev = ref.to_blocked(y_prev_nchw, b) if to == "blocked" else y_prev_nchw
    marks = np.zeros((1, 1, 4, 4), np.uint8)
    marks[..., 1:3, 2] = 1
    y = ref.delta_reorder(x, y_prev, marks, to=to, block=b, channels=c)
    expected = np.where(marks != 0, x_nchw, y_prev_nchw)
    got = ref.from_blocked(y, b, c) if to == "blocked" else y
    np.testing.assert_array_equal(got, expected)
    if to == "blocked":
        assert not pad_lanes(y, b, c).any()
    # Y_prev of X's shape (not Y's) is no state: every pixel from X
    y_fresh = ref.delta_reorder(x, x, marks, to=to, block=b, channels=c)
    np.testing.assert_array_equal(y_fresh, ref.delta_reorder(x, to=to, block=b, channels=c))
