"""The input gate's numpy reference (reference.delta_gate, docs/design.md#rule-1 to #rule-3 and #rule-2b): invariants on random
sequences, checked against a brute-force reading of the block rule."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import EMPTY
from deltaonnx import reference as ref

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def blocks_of(h: int, w: int, k: int):
    """(row slice, column slice) of every k x k block, edge blocks smaller."""
    for y in range(0, h, k):
        for x in range(0, w, k):
            yield slice(y, min(y + k, h)), slice(x, min(x + k, w))


def brute_force_gate(X, X_ref, tau, k, hard):
    """Rule 2b block by block, in float64 (the reference's float32 sums differ only at the rounding edge,
    which random data does not hit)."""
    n, c, h, w = X.shape
    d = X.astype(np.float64) - X_ref.astype(np.float64)
    changed = np.zeros((n, h, w), bool)
    for i in range(n):
        for rows, cols in blocks_of(h, w, k):
            part = d[i, :, rows, cols]
            bad = ~np.isfinite(part).all()
            moved = np.any(np.abs(part.mean(axis=(1, 2))) > tau)
            hot = np.any(np.abs(part).max(axis=0) > hard)
            changed[i, rows, cols] = bad or moved or hot
    return changed


def check_invariants(X, gated, tau, k, hard):
    """After the run: every block mean within tau of its reference, every pixel within tau_hard."""
    d = X.astype(np.float64) - gated.astype(np.float64)
    assert np.all(np.abs(d) <= hard + 1e-6)
    for rows, cols in blocks_of(X.shape[2], X.shape[3], k):
        assert np.all(np.abs(d[:, :, rows, cols].mean(axis=(2, 3))) <= tau + 1e-6)


def noisy_sequence(rng, frames, shape, noise):
    base = rng.uniform(-1, 1, shape).astype(np.float32)
    for _ in range(frames):
        frame = base + rng.normal(0, noise, shape).astype(np.float32)
        if rng.random() < 0.5:  # a moving patch
            y, x = rng.integers(0, shape[2]), rng.integers(0, shape[3])
            frame[:, :, y:y + 3, x:x + 4] += 1.0
        yield frame


@SETTINGS
@given(h=st.integers(1, 13), w=st.integers(1, 13), k=st.integers(1, 6), c=st.integers(1, 3), n=st.integers(1, 2),
       tau=st.floats(0.0, 0.3), hard_factor=st.floats(1.0, 4.0), seed=st.integers(0, 2**16))
def test_block_rule_matches_brute_force_and_keeps_invariants(h, w, k, c, n, tau, hard_factor, seed):
    rng = np.random.default_rng(seed)
    hard = tau * hard_factor
    state = EMPTY
    for frame in noisy_sequence(rng, 5, (n, c, h, w), 0.1):
        gated, map_out = ref.delta_gate(frame, state, rule="block", threshold=tau, gate_block=k, gate_hard=hard)
        if state.size:
            expected = brute_force_gate(frame, state, tau, k, hard)
            np.testing.assert_array_equal(map_out[:, 0] != 0, expected)
            np.testing.assert_array_equal(gated, np.where(expected[:, None], frame, state))
        else:
            assert map_out.all() and np.array_equal(gated, frame)
        check_invariants(frame, gated, tau, k, hard)
        state = gated


def test_pixel_rule_is_rule_2():
    rng = np.random.default_rng(0)
    X_ref = rng.uniform(-1, 1, (2, 3, 7, 9)).astype(np.float32)
    X = X_ref + rng.normal(0, 0.1, X_ref.shape).astype(np.float32)
    gated, map_out = ref.delta_gate(X, X_ref, rule="pixel", threshold=0.1)
    expected = ref.changed_pixels(X, X_ref, 0.1)
    np.testing.assert_array_equal(map_out[:, 0] != 0, expected)
    np.testing.assert_array_equal(gated, np.where(expected[:, None], X, X_ref))


def test_whole_block_moves_and_edge_blocks_are_smaller():
    X_ref = np.zeros((1, 1, 5, 6), np.float32)
    X = X_ref.copy()
    X[0, 0, 4, 5] = 0.5  # alone in the 1x2 corner block: mean 0.25 > 0.2
    X[0, 0, 0, 0] = 0.5  # in a full 4x4 block: mean 0.03, below tau and tau_hard
    gated, map_out = ref.delta_gate(X, X_ref, rule="block", threshold=0.2, gate_block=4, gate_hard=0.6)
    expected = np.zeros((5, 6), bool)
    expected[4:, 4:] = True
    np.testing.assert_array_equal(map_out[0, 0] != 0, expected)
    assert gated[0, 0, 4, 5] == 0.5 and gated[0, 0, 0, 0] == 0.0


def test_one_pixel_above_tau_hard_moves_its_block():
    X_ref = np.zeros((1, 2, 8, 8), np.float32)
    X = X_ref.copy()
    X[0, 1, 5, 2] = -0.7
    _, map_out = ref.delta_gate(X, X_ref, rule="block", threshold=0.1, gate_block=4, gate_hard=0.6)
    expected = np.zeros((8, 8), bool)
    expected[4:, :4] = True
    np.testing.assert_array_equal(map_out[0, 0] != 0, expected)


@pytest.mark.parametrize("where", ["X", "X_ref"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_one_pixel_moves_its_block(where, bad):
    X_ref = np.ones((1, 3, 6, 6), np.float32)
    X = X_ref.copy()
    (X if where == "X" else X_ref)[0, 2, 3, 4] = bad
    gated, map_out = ref.delta_gate(X, X_ref, rule="block", threshold=10.0, gate_block=3, gate_hard=30.0)
    expected = np.zeros((6, 6), bool)
    expected[3:, 3:] = True
    np.testing.assert_array_equal(map_out[0, 0] != 0, expected)
    np.testing.assert_array_equal(gated, np.where(expected, X, X_ref))


def test_batch_items_are_independent():
    rng = np.random.default_rng(1)
    X_ref = rng.uniform(-1, 1, (3, 3, 10, 11)).astype(np.float32)
    X = X_ref + rng.normal(0, 0.2, X_ref.shape).astype(np.float32)
    both = ref.delta_gate(X, X_ref, threshold=0.05, gate_block=4, gate_hard=0.3)
    for i in range(3):
        alone = ref.delta_gate(X[i:i + 1], X_ref[i:i + 1], threshold=0.05, gate_block=4, gate_hard=0.3)
        np.testing.assert_array_equal(both[0][i:i + 1], alone[0])
        np.testing.assert_array_equal(both[1][i:i + 1], alone[1])


@pytest.mark.parametrize("state", [EMPTY, np.zeros((1, 3, 4, 4), np.float32), np.zeros((2, 3, 6, 8), np.float32)])
def test_empty_state_or_other_resolution_is_all_changed(state):
    X = np.full((1, 3, 6, 8), 0.25, np.float32)
    gated, map_out = ref.delta_gate(X, state, threshold=0.1, gate_block=4)
    assert map_out.shape == (1, 1, 6, 8) and map_out.all()
    np.testing.assert_array_equal(gated, X)


@pytest.mark.parametrize("resolution", ["frame", "block"])
def test_change_map_restricts_the_gate(resolution):
    rng = np.random.default_rng(2)
    X_ref = rng.uniform(-1, 1, (1, 3, 8, 10)).astype(np.float32)
    X = X_ref + 1.0  # every block changed
    marks = np.zeros((1, 1, 8, 10), np.uint8)
    marks[..., :4, 4:8] = 1  # one block marked
    map_in = marks if resolution == "frame" else marks[..., ::4, ::4]
    gated, map_out = ref.delta_gate(X, X_ref, map_in, threshold=0.1, gate_block=4, gate_hard=0.3)
    np.testing.assert_array_equal(map_out, marks)
    np.testing.assert_array_equal(gated, np.where(marks != 0, X, X_ref))


def test_unmarked_pixels_keep_their_reference_inside_a_changed_block():
    X_ref = np.zeros((1, 1, 4, 4), np.float32)
    X = np.ones_like(X_ref)
    marks = np.ones((1, 1, 4, 4), np.uint8)
    marks[..., 0, 0] = 0  # e.g. a timestamp overlay
    gated, map_out = ref.delta_gate(X, X_ref, marks, threshold=0.1, gate_block=4, gate_hard=0.3)
    assert gated[0, 0, 0, 0] == 0.0 and map_out[0, 0, 0, 0] == 0
    assert (gated[0, 0].ravel()[1:] == 1.0).all()


def test_map_of_all_ones_equals_no_map():
    rng = np.random.default_rng(3)
    X_ref = rng.uniform(-1, 1, (2, 3, 9, 7)).astype(np.float32)
    X = X_ref + rng.normal(0, 0.1, X_ref.shape).astype(np.float32)
    ones = np.ones((2, 1, 9, 7), np.uint8)
    for rule in ("pixel", "block"):
        with_map = ref.delta_gate(X, X_ref, ones, rule=rule, threshold=0.05, gate_block=4, gate_hard=0.2)
        without = ref.delta_gate(X, X_ref, rule=rule, threshold=0.05, gate_block=4, gate_hard=0.2)
        np.testing.assert_array_equal(with_map[0], without[0])
        np.testing.assert_array_equal(with_map[1], without[1])


def test_tau_zero_gate_passes_the_frame_through():
    rng = np.random.default_rng(4)
    X_ref = rng.uniform(-1, 1, (1, 3, 9, 7)).astype(np.float32)
    X = X_ref.copy()
    X[0, 1, 2, 3] += 1e-6
    for rule in ("pixel", "block"):
        gated, _ = ref.delta_gate(X, X_ref, rule=rule, threshold=0.0, gate_block=4)
        np.testing.assert_array_equal(gated, X)


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="tiles"), "rule must be"),
    (dict(threshold=-1.0), "threshold"),
    (dict(gate_block=0), "gate_block"),
    (dict(threshold=0.2, gate_hard=0.1), "gate_hard"),
])
def test_bad_attributes_are_clear_errors(kwargs, message):
    X = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        ref.delta_gate(X, X, **kwargs)


def test_map_of_the_wrong_shape_is_an_error():
    X = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="map_in has shape"):
        ref.delta_gate(X, X, np.ones((1, 1, 3, 3), np.uint8), threshold=0.1, gate_block=4)
