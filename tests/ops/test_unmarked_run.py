"""A run whose change map marks nothing (docs/design.md#change-maps: "pixels marked 0 did not change"): with state,
DeltaConv and DeltaPool recompute nothing, so map_out is all 0, Y is Y_prev and X_ref_next is X_ref, whatever X
holds (the map's promise is trusted). The CPU ops take a fast exit there (ops/ort_util.h carry_unmarked_run); these
tests bind every output apart, pre-filled with what the contract never leaves (NaN, marks of 1), so an exit that
returned without writing one of them fails.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from builders import EMPTY, conv_model, op_session, pool_model

SHAPE = (2, 16, 9, 11)  # 16 channels: whole blocks under every b; two batch items


def _bound_run(session, feeds, outputs):
    """One run with the inputs copied in and every output bound to a fresh buffer filled as `outputs` says
    ({name: (shape, dtype, fill)}); returns the buffers."""
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    buffers = {name: np.full(shape, fill, dtype) for name, (shape, dtype, fill) in outputs.items()}
    values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in buffers.items()}  # over the arrays
    for name, value in values.items():
        binding.bind_ortvalue_output(name, value)
    session.run_with_iobinding(binding)
    return {name: value.numpy().copy() for name, value in values.items()}


def _check_unmarked(session, ref_input, y_shape):
    rng = np.random.default_rng(5)
    x1 = rng.standard_normal(SHAPE).astype(np.float32)
    x2 = x1 + 1.0  # differs everywhere: only the map's promise says it did not change
    N, _, H, W = SHAPE
    map_shape = (N, 1, y_shape[2], y_shape[3])
    ones = np.ones((N, 1, H, W), np.uint8)
    first = {"X": x1, "Y_prev": EMPTY, "map_in": ones}
    if ref_input:
        first["X_ref"] = EMPTY
    outputs = {"Y": (y_shape, np.float32, np.nan), "map_out": (map_shape, np.uint8, 1)}
    if ref_input:
        outputs["X_ref_next"] = (SHAPE, np.float32, np.nan)
    state = _bound_run(session, first, outputs)
    assert not np.isnan(state["Y"]).any()
    second = {"X": x2, "Y_prev": state["Y"], "map_in": np.zeros_like(ones)}
    if ref_input:
        second["X_ref"] = state["X_ref_next"]
    got = _bound_run(session, second, outputs)
    np.testing.assert_array_equal(got["map_out"], np.zeros(map_shape, np.uint8))
    np.testing.assert_array_equal(got["Y"], state["Y"])
    if ref_input:
        np.testing.assert_array_equal(got["X_ref_next"], state["X_ref_next"])
    # A mark anywhere is no unmarked run: that item's outputs around it are recomputed from X.
    marked = np.zeros_like(ones)
    marked[1, 0, 4, 5] = 1
    again = dict(second, map_in=marked)
    got = _bound_run(session, again, outputs)
    assert got["map_out"][0].sum() == 0 and got["map_out"][1].sum() > 0
    assert not np.array_equal(got["Y"][1], state["Y"][1])
    np.testing.assert_array_equal(got["Y"][0], state["Y"][0])


@pytest.mark.sanitizer
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
@pytest.mark.parametrize("ref_input", [False, True], ids=["dropped_reference", "kept_reference"])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_unmarked_run_carries_the_state(layout, ref_input, kernel):
    rng = np.random.default_rng(kernel)
    w = (rng.standard_normal((16, 16, kernel, kernel)) * 0.2).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    attrs = dict(kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4, layout=layout, activation="Relu")
    session = op_session(conv_model(attrs, W=w, B=b, with_map=True, ref_input=ref_input))
    _check_unmarked(session, ref_input, SHAPE)


@pytest.mark.sanitizer
@pytest.mark.parametrize("layout", ["nchw", "blocked"])
def test_pool_unmarked_run_carries_the_state(layout):
    attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], layout=layout)
    session = op_session(pool_model(attrs, with_map=True))
    N, C, H, W = SHAPE
    _check_unmarked(session, True, (N, C, (H + 1) // 2, (W + 1) // 2))
