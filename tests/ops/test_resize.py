"""DeltaResize (docs/ops.md#deltaresize): a nearest upsample by integer factors of NCHW or blocked memory
([N][C/b][H][W][b], b = deltaonnx._native.channel_block()), with its last output as state.

Bit for bit equal to ORT's Resize at every attribute set the converter turns into it (nearest; asymmetric with
floor, half_pixel / pytorch_half_pixel with round_prefer_floor or round_prefer_ceil; scales or sizes), NaN payloads
and infinities included, in both layouts and for b forced to 16, 8, 4 and 1; with a partial map and Y_prev, exactly
the outputs of marked pixels are written (the rest keep Y_prev) and map_out is the map upsampled; rule 1 (empty or
other-shaped Y_prev, an empty map, none) writes every output; Y bound to Y_prev's buffer equals copying. Bad
attributes and shapes are refused with the node named. The CUDA library's host code runs through its emulation.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import DOMAIN, EMPTY, marked_frames, op_model, op_session, value_info
from conftest import check_under_simd
from deltaonnx import reference as ref
from test_reorder import channel_block, special_values

FACTORS = [(2, 2), (3, 3), (2, 1), (1, 3), (1, 1), (4, 2)]
# (coordinate_transformation_mode, nearest_mode): the geometries whose output pixel (y, x) reads (y // fh, x // fw)
# at integer scales (graph_passes/blocked_resize.py accepts these).
GEOMETRIES = [("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"), ("half_pixel", "round_prefer_ceil"),
              ("pytorch_half_pixel", "round_prefer_floor")]
SHAPES = [(1, 16, 5, 7), (2, 32, 3, 4), (1, 48, 1, 1), (0, 16, 2, 2), (1, 16, 37, 41)]


def resize_model(factors, layout="nchw", name="resize_0", with_state=False, attrs=None):
    """One DeltaResize X -> (Y, map_out); with_state adds Y_prev and map_in. factors=None leaves it out."""
    attrs = dict(attrs or {})
    if factors is not None:
        attrs["factors"] = list(factors)
    if layout is not None:
        attrs["layout"] = layout
    inputs = ["X", "Y_prev", "map_in"] if with_state else ["X"]
    node = helper.make_node("DeltaResize", inputs, ["Y", "map_out"], domain=DOMAIN, name=name, **attrs)
    graph_inputs = [value_info("X")] + ([value_info("Y_prev"), value_info("map_in", TensorProto.UINT8)]
                                        if with_state else [])
    return op_model([node], graph_inputs, [value_info("Y"), value_info("map_out", TensorProto.UINT8)])


def ort_resize(x, factors, geometry, by_sizes=False):
    """ORT's own Resize (opset 13) of x by `factors` at `geometry`, through scales or through sizes."""
    mode, nearest = geometry
    scales = np.array([1, 1, *factors], np.float32)
    sizes = np.array([x.shape[0], x.shape[1], x.shape[2] * factors[0], x.shape[3] * factors[1]], np.int64)
    inputs = ["X", "roi", "", "sizes"] if by_sizes else ["X", "roi", "scales"]
    node = helper.make_node("Resize", inputs, ["Y"], mode="nearest", coordinate_transformation_mode=mode,
                            nearest_mode=nearest)
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi"), numpy_helper.from_array(scales, "scales"),
             numpy_helper.from_array(sizes, "sizes")]
    model = op_model([node], [value_info("X")], [value_info("Y")], inits, opset=13)
    return op_session(model, custom=False).run(None, {"X": x})[0]


def assert_bits_equal(got, want, what=""):
    assert got.shape == want.shape, (got.shape, want.shape, what)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=what)


def check_equals_ort(seed=3):
    """Both layouts, every factor and geometry, against ORT's Resize of the NCHW tensor (blocked: to_blocked of it)."""
    b = channel_block()
    rng = np.random.default_rng(seed)
    for factors in FACTORS:
        sessions = {layout: op_session(resize_model(factors, layout)) for layout in ("nchw", "blocked")}
        for shape in SHAPES:
            x = special_values(rng, shape)
            for geometry in GEOMETRIES:
                for by_sizes in (False, True):
                    want = ort_resize(x, factors, geometry, by_sizes)
                    where = f"{shape} {factors} {geometry} sizes={by_sizes} b={b}"
                    y, map_out = sessions["nchw"].run(None, {"X": x})
                    assert_bits_equal(y, want, where)
                    assert map_out.shape == (shape[0], 1, *want.shape[2:]) and np.all(map_out == 1), where
            y, map_out = sessions["blocked"].run(None, {"X": ref.to_blocked(x, b)})
            assert_bits_equal(y, ref.to_blocked(want, b), f"blocked {shape} {factors} b={b}")
            assert np.all(map_out == 1)


@pytest.mark.sanitizer
def test_equals_ort_resize():
    check_equals_ort()


@pytest.mark.parametrize("block, simd", [("16", "avx512"), ("8", "avx2"), ("4", "scalar"), ("1", "scalar")])
def test_equals_ort_resize_with_forced_block(block, simd):
    check_under_simd(simd, "test_resize", "check_equals_ort(seed=5)", channel_block=block)


def check_partial(seed=7, library=None, blocks=None):
    """A partial map with Y_prev: exactly the outputs of marked pixels come from X, the others keep Y_prev (filled
    with a value X never has), map_out is the map upsampled; the numpy reference agrees."""
    b = channel_block() if blocks is None else blocks
    rng = np.random.default_rng(seed)
    for layout in ("nchw", "blocked"):
        for factors in [(2, 2), (3, 1), (1, 2)]:
            session = op_session(resize_model(factors, layout, with_state=True), library=library)
            for shape in [(1, 32, 5, 7), (2, 16, 4, 3)]:
                x = special_values(rng, shape)
                x_in = ref.to_blocked(x, b) if layout == "blocked" else x
                y_shape = (shape[0], shape[1], shape[2] * factors[0], shape[3] * factors[1])
                y_prev = np.full(y_shape, 1e30, np.float32)
                for fraction in (0.0, 0.2, 0.45, 0.8, 1.0):
                    marks = (rng.random((shape[0], 1, *shape[2:])) < fraction).astype(np.uint8)
                    marks[marks != 0] = rng.integers(1, 256, int(marks.sum()))  # any nonzero marks
                    y, map_out = session.run(None, {"X": x_in, "Y_prev": y_prev, "map_in": marks})
                    want_y, want_map = ref.delta_resize(x_in, y_prev, marks, factors=factors, layout=layout, block=b)
                    where = f"{layout} {factors} {shape} {fraction}"
                    assert_bits_equal(y, want_y, where)
                    upsampled = (marks != 0).repeat(factors[0], axis=2).repeat(factors[1], axis=3)
                    np.testing.assert_array_equal(map_out, upsampled.astype(np.uint8), err_msg=where)
                    np.testing.assert_array_equal(want_map, map_out, err_msg=where)
                    assert (y == 1e30).sum() == (upsampled == 0).sum() * shape[1], where  # only marked outputs written


@pytest.mark.sanitizer
def test_partial_map_writes_only_marked_outputs():
    check_partial()


@pytest.mark.parametrize("block, simd", [("8", "avx2"), ("1", "scalar")])
def test_partial_map_with_forced_block(block, simd):
    check_under_simd(simd, "test_resize", "check_partial(seed=9)", channel_block=block)


@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_rule_1_writes_every_output(layout, rng):
    """An empty Y_prev (a first run), one of another shape (a new resolution) and an empty map: every output from X,
    map_out all 1."""
    b = channel_block()
    session = op_session(resize_model((2, 2), layout, with_state=True))
    x = special_values(rng, (1, 32, 4, 5))
    x_in = ref.to_blocked(x, b) if layout == "blocked" else x
    full = ref.delta_resize(x_in, factors=(2, 2), layout=layout, block=b)[0]
    marks = np.zeros((1, 1, 4, 5), np.uint8)  # marks nothing: with state nothing would be written
    for feeds in ({"Y_prev": EMPTY, "map_in": marks}, {"Y_prev": np.zeros((1, 32, 8, 9), np.float32), "map_in": marks},
                  {"Y_prev": np.zeros(full.shape, np.float32), "map_in": np.zeros((0, 1, 0, 0), np.uint8)}):
        y, map_out = session.run(None, {"X": x_in, **feeds})
        assert_bits_equal(y, full)
        assert np.all(map_out == 1)


@pytest.mark.sanitizer
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_in_place_equals_copying(layout, rng):
    """docs/state_protocol.md "In place": Y bound to Y_prev's buffer; the op writes only the outputs of marked pixels."""
    import onnxruntime as ort

    b = channel_block()
    session = op_session(resize_model((2, 2), layout, with_state=True))
    shape = (1, 32, 6, 5)
    frames, maps = marked_frames(rng, shape)
    frames = [ref.to_blocked(x, b) if layout == "blocked" else x for x in frames]
    copying, y_prev = [], EMPTY
    for x, marks in zip(frames, maps):
        y_prev = session.run(None, {"X": x, "Y_prev": y_prev, "map_in": marks})[0]
        copying.append(y_prev)
    state = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, 32, 12, 10), np.float32))
    for t, (x, marks) in enumerate(zip(frames, maps)):
        binding = session.io_binding()
        binding.bind_cpu_input("X", x)
        binding.bind_cpu_input("map_in", marks)
        binding.bind_cpu_input("Y_prev", EMPTY) if t == 0 else binding.bind_ortvalue_input("Y_prev", state)
        binding.bind_ortvalue_output("Y", state)
        binding.bind_output("map_out")
        session.run_with_iobinding(binding)
        np.testing.assert_array_equal(state.numpy(), copying[t], err_msg=f"frame {t}")
        np.testing.assert_array_equal(state.numpy(), ref.delta_resize(x, factors=(2, 2), layout=layout, block=b)[0])


def test_reference_evaluator_runs_the_op(rng):
    b = channel_block()
    model = resize_model((3, 2), "blocked", with_state=True)
    x = ref.to_blocked(special_values(rng, (2, 16, 3, 5)), b)
    feeds = {"X": x, "Y_prev": np.zeros((2, 16, 9, 10), np.float32),
             "map_in": (rng.random((2, 1, 3, 5)) < 0.4).astype(np.uint8)}
    expected = op_session(model).run(None, feeds)
    got = ref.make_reference_evaluator(model, channel_block=b).run(None, feeds)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g.view(e.dtype), e)


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("factors, attrs, expected", [
    (None, {}, "attribute 'factors' is required"),
    ((2,), {}, "attribute 'factors' must hold 2 integers"),
    ((2, 2, 1), {}, "attribute 'factors' must hold 2 integers"),
    ((0, 2), {}, "attribute 'factors' must be in [1, 65536], got 0"),
    ((2, -1), {}, "got -1"),
    ((2, 65537), {}, "got 65537"),
    (None, {"factors": [2.0, 2.0]}, "attribute 'factors'"),
    ((2, 2), {"layout": "blocked_out"}, "attribute 'layout' must be \"nchw\" or \"blocked\", got \"blocked_out\""),
    ((2, 2), {"layout": 1}, "attribute 'layout'"),
])
def test_bad_attributes_refused_at_session_creation(factors, attrs, expected):
    layout = None if "layout" in attrs else "nchw"
    with pytest.raises(Exception) as info:
        op_session(resize_model(factors, layout, name="bad", attrs=attrs))
    message = str(info.value)
    assert "DeltaResize node 'bad'" in message and expected in message, message


def run_error(model, feeds) -> str:
    with pytest.raises(Exception) as info:
        op_session(model).run(None, feeds)
    return str(info.value)


@pytest.mark.parametrize("shape", [(16, 4, 4), (1, 16, 4, 4, 1)])
def test_not_4d_refused(shape):
    message = run_error(resize_model((2, 2), name="r3"), {"X": np.zeros(shape, np.float32)})
    assert "DeltaResize node 'r3'" in message and "X must be 4-D NCHW" in message, message


def check_blocked_channels_refused():
    assert channel_block() == 16
    message = run_error(resize_model((2, 2), "blocked", name="r8"), {"X": np.zeros((1, 8, 4, 4), np.float32)})
    assert "DeltaResize node 'r8'" in message and "not a multiple of the library's channel block 16" in message, message
    op_session(resize_model((2, 2), "nchw")).run(None, {"X": np.zeros((1, 8, 4, 4), np.float32)})  # NCHW: any C


def test_blocked_channels_not_multiple_of_block_refused():
    check_under_simd("scalar", "test_resize", "check_blocked_channels_refused()", channel_block="16")


@pytest.mark.sanitizer
@pytest.mark.parametrize("factors, shape", [((65536, 1), (1, 1, 65536, 1)), ((2, 65536), (1, 2, 1, 32769))])
def test_output_side_too_large_refused(factors, shape):
    """A side of Y past the ops' bound (2**31 pixels): an error naming the node before anything is allocated."""
    message = run_error(resize_model(factors, name="big"), {"X": np.zeros(shape, np.float32)})
    assert "DeltaResize node 'big'" in message and "above the ops' bound of 2147483648 per side" in message, message


@pytest.mark.sanitizer
def test_map_of_another_shape_refused(rng):
    x = rng.standard_normal((1, 16, 4, 4)).astype(np.float32)
    feeds = {"X": x, "Y_prev": np.zeros((1, 16, 8, 8), np.float32), "map_in": np.ones((1, 1, 4, 3), np.uint8)}
    message = run_error(resize_model((2, 2), with_state=True, name="rm"), feeds)
    assert "DeltaResize node 'rm'" in message and "map_in must be [N,1,H,W]" in message, message
    with pytest.raises(ValueError, match="map_in has shape"):
        ref.delta_resize(x, feeds["Y_prev"], feeds["map_in"], factors=(2, 2))


# ---------------------------------------------------------------------------------------------------------
# the CUDA library (b = 1) through its host emulation
# ---------------------------------------------------------------------------------------------------------

def test_emulated_cuda_resize(emulated_cuda_library, rng):
    """b = 1 on CUDA: "blocked" is NCHW; the kernels (one thread per output float, the map's per byte) equal ORT's
    Resize whole and the reference with a partial map; the same attributes are refused."""
    for factors in [(2, 2), (3, 1)]:
        for layout in ("nchw", "blocked"):
            session = op_session(resize_model(factors, layout), library=emulated_cuda_library)
            for shape in [(2, 8, 3, 5), (1, 3, 1, 1), (0, 16, 2, 2)]:
                x = special_values(rng, shape)
                y, map_out = session.run(None, {"X": x})
                assert_bits_equal(y, ort_resize(x, factors, ("asymmetric", "floor")))
                assert np.all(map_out == 1)
    check_partial(seed=11, library=emulated_cuda_library, blocks=1)
    with pytest.raises(Exception, match="DeltaResize node 'c'.*attribute 'factors' must hold 2"):
        op_session(resize_model((2,), name="c"), library=emulated_cuda_library)
