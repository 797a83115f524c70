"""The frame check before a probe (session/probe_check.py): which pixels of the sampled bands each level of the
chain from the gate marks, and the floor they make under the work."""
from __future__ import annotations

import numpy as np
import pytest

from deltaonnx.session.probe_check import ProbeCheck

WINDOW = ProbeCheck(0.0, ((1, 1),), (1.0,))  # a 3x3 conv as the gate, tau 0, alone
BLOCKS = ProbeCheck(0.5, ((0, 0),), (1.0,), block=8)  # the block rule: 8x8 blocks, gate_hard 0.5


def _frames(shape=(1, 3, 96, 64)):
    before = np.zeros(shape, np.float32)
    return before, before.copy()


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_a_window_gate_marks_the_pixels_its_kernel_reaches(layout):
    before, after = _frames()
    after[0, 1, 33, 10] = 1.0  # one element, next to the sampled row 32: its pixel and the two beside it
    after[0, 2, 50, 40] = 1.0  # outside every band: not seen
    check = WINDOW
    if layout == "nhwc":  # its rows and columns are axes 1 and 2 (a 3-channel NCHW read would see 3 rows)
        before, after = before.transpose(0, 2, 3, 1).copy(), after.transpose(0, 2, 3, 1).copy()
        check = ProbeCheck(0.0, ((1, 1),), (1.0,), axes=(1, 2))
    kept = check.keep(before)
    assert check.work_floor(after, kept) == pytest.approx(3 / (3 * 64))  # rows 0, 32, 64 sampled
    assert check.work_floor(before, kept) == 0.0


def test_each_level_of_the_chain_counts_its_reach_at_its_weight():
    before, after = _frames()
    after[0, 0, 35, 20] = 1.0  # 3 rows from the sampled row 32: beyond the gate's reach, within the next level's
    chain = ProbeCheck(0.0, ((1, 1), (3, 3)), (0.25, 0.75))
    floor = chain.work_floor(after, chain.keep(before))
    assert floor == pytest.approx(0.25 * 0 + 0.75 * 7 / (3 * 64))  # columns 17-23 at the second level


def test_nan_moves_and_the_bound_holds():
    before, after = _frames()
    after[0, 0, 0, 0] = np.nan
    after[0, 0, 64, 20] = 0.4  # past tau 0, within the block rule's gate_hard 0.5
    assert WINDOW.work_floor(after, WINDOW.keep(before)) == pytest.approx((2 + 3) / (3 * 64))  # columns 0-1, 19-21
    assert BLOCKS.work_floor(after, BLOCKS.keep(before)) == pytest.approx(8 / (3 * 64))  # the NaN's block alone


def test_the_block_rule_marks_aligned_blocks():
    before, after = _frames()
    after[0, 0, 39, 62] = 9.0  # row 39 is in the band of row 32 (its block's rows 32-39); columns 56-63
    after[0, 0, 40, 5] = 9.0  # the next block row: not sampled
    assert BLOCKS.work_floor(after, BLOCKS.keep(before)) == pytest.approx(8 / (3 * 64))


def test_a_frame_of_other_shape_lets_the_probe_through():
    before, after = _frames()
    kept = WINDOW.keep(before)
    assert WINDOW.work_floor(np.ones((1, 3, 128, 64), np.float32), kept) == 0.0
    assert WINDOW.keep(np.zeros((3, 16, 16), np.float32)) is None
    small = np.zeros((1, 1, 16, 16), np.float32)  # one sampled row, its band clipped at the frame's edge
    moved = small.copy()
    moved[0, 0, 1, 15] = 1.0
    assert WINDOW.work_floor(moved, WINDOW.keep(small)) == pytest.approx(2 / 16)


def test_the_compiled_count_is_numpys():
    """ops/pybind/probe_marks.cc against ProbeCheck.marked_shares (numpy), on random frames: both layouts, the
    block rule, one to three levels, NaN, bands clipped at the edges."""
    pytest.importorskip("deltaonnx._native")
    rng = np.random.default_rng(7)
    for trial in range(200):
        nhwc = bool(rng.integers(2))
        n, c, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 100)), int(rng.integers(1, 60))
        block = int(rng.choice([0, 0, 4, 8]))
        levels = int(rng.integers(1, 4))
        reaches = ((0, 0),) if block else tuple((int(rng.integers(0, 6)), int(rng.integers(0, 6))) for _ in range(levels))
        check = ProbeCheck(float(rng.choice([0.0, 0.3])), reaches, (1.0 / len(reaches),) * len(reaches), block,
                           (1, 2) if nhwc else (2, 3))
        before = rng.random((n, h, w, c) if nhwc else (n, c, h, w)).astype(np.float32)
        after = before.copy()
        moved = rng.random(before.shape) < rng.choice([0.001, 0.01, 0.2])
        after[moved] += rng.choice([0.1, 0.5, np.nan], size=int(moved.sum())).astype(np.float32)
        index = check._band_rows(before.shape[check.axes[0]])
        bands, kept = np.take(after, index.ravel(), axis=check.axes[0]), check.keep(before)
        np.testing.assert_allclose(check.native_marked_shares(bands, kept, index.shape),
                                   check.marked_shares(bands, kept, index.shape), err_msg=f"case {trial}")


def test_the_work_behind_a_global_reduction_counts_whole_once_anything_is_marked():
    """`everywhere`: ops behind a squeeze-excite pool redo everything when the gate marks any pixel."""
    before, after = _frames()
    check = ProbeCheck(0.0, ((1, 1),), (0.4,), everywhere=0.6)
    kept = check.keep(before)
    assert check.work_floor(before, kept) == 0.0
    after[0, 1, 32, 10] = 1.0
    assert check.work_floor(after, kept) == pytest.approx(0.4 * 3 / (3 * 64) + 0.6)
    blocks = ProbeCheck(0.5, ((0, 0),), (0.4,), block=8, everywhere=0.6)
    assert blocks.work_floor(after, blocks.keep(before)) == pytest.approx(0.4 * 8 / (3 * 64) + 0.6)
