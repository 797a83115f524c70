"""DeltaGlobalAveragePool and DeltaChannelScale (docs/ops.md#deltaglobalaveragepool, #deltachannelscale): a
squeeze-excite block's pool and per-channel scale reading a blocked region's tensor as it lies ([N][Cb/b][H][W][b],
Cb = roundup(C, b), b = deltaonnx._native.channel_block()).

Against ORT's own GlobalAveragePool and Mul on the NCHW tensor (the pool to float rounding of a sum, the scale bit
for bit) and the numpy reference, in both layouts, with padded channel counts, batch 2 and a gate of batch 1, and
for b forced to 16, 8, 4 and 1; the scale's pad lanes are 0 even where X's hold NaN; bad shapes and attributes are
refused with the node named. The CUDA library's host code runs through its emulation.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from builders import DOMAIN, op_model, op_session, value_info
from conftest import check_under_simd
from deltaonnx import reference as ref
from test_reorder import channel_block

# (N, C, H, W): whole blocks, padded blocks (24, 72: MobileNetV3's), fewer than a block, one pixel, batch 2.
SHAPES = [(1, 16, 7, 9), (1, 24, 5, 5), (2, 72, 14, 14), (1, 3, 4, 6), (1, 40, 1, 1), (2, 32, 56, 56), (1, 8, 3, 1)]


def pool_model(layout="blocked", channels=None, name="pool_0", attrs=None):
    attrs = dict(attrs or {})
    if layout is not None:
        attrs["layout"] = layout
    if channels is not None:
        attrs["channels"] = channels
    node = helper.make_node("DeltaGlobalAveragePool", ["X"], ["Y"], domain=DOMAIN, name=name, **attrs)
    return op_model([node], [value_info("X")], [value_info("Y")])


def scale_model(layout="blocked", name="scale_0", attrs=None):
    attrs = dict(attrs or {})
    if layout is not None:
        attrs["layout"] = layout
    node = helper.make_node("DeltaChannelScale", ["X", "S"], ["Y"], domain=DOMAIN, name=name, **attrs)
    return op_model([node], [value_info("X"), value_info("S")], [value_info("Y")])


def ort_op(op_type, *inputs):
    """ORT's own op of NCHW inputs."""
    names = [f"in{i}" for i in range(len(inputs))]
    model = op_model([helper.make_node(op_type, names, ["Y"])], [value_info(n) for n in names], [value_info("Y")])
    return op_session(model, custom=False).run(None, dict(zip(names, inputs)))[0]


def laid_out(x, layout, b):
    return ref.to_blocked(x, b) if layout == "blocked" and b > 1 else x


def check_against_ort(seed=3, library=None, block=None):
    rng = np.random.default_rng(seed)
    b = channel_block() if block is None else block
    for layout in ("nchw", "blocked"):
        pool = op_session(pool_model(layout), library=library)
        scale = op_session(scale_model(layout), library=library)
        for n, c, h, w in SHAPES:
            x = (rng.standard_normal((n, c, h, w)) * 3).astype(np.float32)
            xb = laid_out(x, layout, b)
            given = op_session(pool_model(layout, channels=c), library=library).run(None, {"X": xb})[0]
            np.testing.assert_allclose(given, ort_op("GlobalAveragePool", x), rtol=2e-6, atol=1e-6)
            np.testing.assert_allclose(given, ref.delta_global_average_pool(xb, layout=layout, channels=c, block=b),
                                       rtol=2e-6, atol=1e-6)
            if layout == "nchw" or c % b == 0:  # without 'channels': X's count, whole blocks only
                np.testing.assert_array_equal(pool.run(None, {"X": xb})[0], given)
            for gate_batch in {1, n}:
                s = rng.uniform(0, 1, (gate_batch, c, 1, 1)).astype(np.float32)
                y = scale.run(None, {"X": xb, "S": s})[0]
                want = ort_op("Mul", x, s)
                np.testing.assert_array_equal(y, laid_out(want, layout, b))
                np.testing.assert_array_equal(y, ref.delta_channel_scale(xb, s, layout=layout, block=b))


@pytest.mark.sanitizer
def test_equal_ort_and_the_reference():
    check_against_ort()


@pytest.mark.parametrize("block, simd", [("16", "avx512"), ("8", "avx2"), ("4", "scalar"), ("1", "scalar")])
def test_equal_ort_with_forced_block(block, simd):
    check_under_simd(simd, "test_channel_ops", f"check_against_ort(seed=5, block={block})", channel_block=block)


@pytest.mark.sanitizer
def test_scale_writes_zero_pad_lanes_and_keeps_nan_in_real_lanes(rng):
    b = channel_block()
    if b == 1:
        pytest.skip("no pad lanes with channel block 1")
    c = b + 3
    x = rng.standard_normal((1, c, 4, 5)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    xb = ref.to_blocked(x, b)
    lanes = xb.reshape(1, -1, 4, 5, b)  # [N][Cb/b][H][W][b]: the last plane's lanes past C are pad lanes
    lanes[0, -1, :, :, c % b:] = np.nan  # pad lanes breaking the invariant must not pass on
    s = rng.uniform(0.5, 1.5, (1, c, 1, 1)).astype(np.float32)
    y = op_session(scale_model()).run(None, {"X": xb, "S": s})[0]
    assert y.shape == xb.shape
    np.testing.assert_array_equal(y.reshape(1, -1, 4, 5, b)[0, -1, :, :, c % b:], 0.0)
    assert np.isnan(ref.from_blocked(y, b, c)[0, 1, 2, 3])
    np.testing.assert_array_equal(ref.from_blocked(y, b, c), x * s)


@pytest.mark.sanitizer
def test_pool_of_nan_and_of_no_pixels(rng):
    x = rng.standard_normal((1, 16, 3, 3)).astype(np.float32)
    x[0, 5, 1, 1] = np.nan
    y = op_session(pool_model("nchw")).run(None, {"X": x})[0]
    assert np.isnan(y[0, 5, 0, 0]) and np.isfinite(np.delete(y.reshape(-1), 5)).all()
    empty = op_session(pool_model("nchw")).run(None, {"X": np.zeros((1, 16, 0, 4), np.float32)})[0]
    assert empty.shape == (1, 16, 1, 1) and np.isnan(empty).all()  # a mean of nothing, as 0 / 0


@pytest.mark.sanitizer
def test_bad_shapes_and_attributes_are_refused():
    b = channel_block()
    x = np.zeros((1, 16, 4, 4), np.float32)
    with pytest.raises(Exception, match="DeltaGlobalAveragePool node 'p'.*X must be 4-D"):
        op_session(pool_model("nchw", name="p")).run(None, {"X": np.zeros((16, 4, 4), np.float32)})
    with pytest.raises(Exception, match="DeltaGlobalAveragePool node 'p'.*X has 16 channels .*not the 24"):
        op_session(pool_model("nchw", channels=24, name="p")).run(None, {"X": x})
    with pytest.raises(Exception, match="DeltaGlobalAveragePool node 'q'.*'channels' must be >= 1"):
        op_session(pool_model(channels=0, name="q"))
    with pytest.raises(Exception, match="DeltaGlobalAveragePool node 'r'.*'layout' must be"):
        op_session(pool_model("nhwc", name="r"))
    scale = op_session(scale_model("nchw", name="s"))
    for bad in [np.zeros((1, 16), np.float32), np.zeros((1, 16, 2, 1), np.float32), np.zeros((3, 16, 1, 1), np.float32)]:
        with pytest.raises(Exception, match=r"DeltaChannelScale node 's'.*S must be \[1 or 1, C, 1, 1\]"):
            scale.run(None, {"X": x, "S": bad})
    with pytest.raises(Exception, match="DeltaChannelScale node 's'.*X has 16 channels .*not the 8"):
        scale.run(None, {"X": x, "S": np.zeros((1, 8, 1, 1), np.float32)})
    if b > 1:
        with pytest.raises(Exception, match=f"DeltaChannelScale node 't'.*not the {2 * b}"):
            op_session(scale_model(name="t")).run(None, {"X": np.zeros((1, b + 1, 2, 2), np.float32),
                                                        "S": np.zeros((1, b + 1, 1, 1), np.float32)})
    with pytest.raises(ValueError, match="S must be"):
        ref.delta_channel_scale(x, np.zeros((1, 16), np.float32))
    with pytest.raises(ValueError, match="expected 24"):
        ref.delta_global_average_pool(x, channels=24)


def test_emulated_cuda_library(emulated_cuda_library):
    """b = 1 on CUDA: "blocked" is NCHW; one thread per output channel (the pool) or float (the scale)."""
    check_against_ort(seed=13, library=emulated_cuda_library, block=1)
    with pytest.raises(Exception, match="DeltaChannelScale node 'c'.*S must be"):
        op_session(scale_model(name="c"), library=emulated_cuda_library).run(
            None, {"X": np.zeros((1, 4, 2, 2), np.float32), "S": np.zeros((1, 4, 2, 2), np.float32)})
