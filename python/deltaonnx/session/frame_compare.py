"""The identical-frame test's comparisons: a frame within tau of its reference, bitwise equal to the last one."""
from __future__ import annotations

import functools
import math

import numpy as np

from ..graph_passes.identical_frames import FrameGate


def host_array(value) -> np.ndarray | None:
    """The frame as a host numpy array without a copy, or None when it lives on a device."""
    if isinstance(value, np.ndarray):
        return value
    if value.device_name().lower() == "cpu":
        return value.numpy()
    return None


_BLOCK_ELEMENTS = 1 << 16  # compare in blocks that stay in cache, and stop at the first block that differs
SAMPLE_ROW_STEP = 32  # first compare every 32nd row: a changed frame is usually caught there, reading little


def _row_axis(shape: tuple) -> int | None:
    """The outermost axis of at least two sample steps (the rows of an image), None when there is none."""
    return next((i for i, n in enumerate(shape) if n >= 2 * SAMPLE_ROW_STEP), None)


@functools.lru_cache(maxsize=64)
def _blocks(shape: tuple) -> tuple[tuple, ...]:
    """Index tuples cutting `shape` into blocks of about _BLOCK_ELEMENTS along its row axis, after a first block of
    every 32nd row of that axis."""
    axis = _row_axis(shape)
    if axis is None:
        return ((),)
    lead = (slice(None),) * axis
    inner = max(1, math.prod(shape) // shape[axis])
    step = max(1, _BLOCK_ELEMENTS // inner)
    return ((*lead, slice(None, None, SAMPLE_ROW_STEP)),) + tuple(
        (*lead, slice(start, start + step)) for start in range(0, shape[axis], step))


def _block_exceeds(frame: np.ndarray, reference: np.ndarray, block: tuple, bound: float) -> bool:
    """Some element of frame[block] is further than `bound` from its reference, or NaN/Inf."""
    with np.errstate(invalid="ignore", over="ignore"):  # Inf - Inf, overflow: both count as changed below
        difference = np.subtract(frame[block], reference[block])
        return difference.size > 0 and not np.abs(difference, out=difference).max() <= bound  # max propagates NaN


def within_tau(frame: np.ndarray, reference: np.ndarray, tau: np.float32) -> bool:
    """Rule 2 sees no change anywhere: |frame - reference| <= tau for every element (NaN/Inf never are)."""
    return not any(_block_exceeds(frame, reference, block, tau) for block in _blocks(frame.shape))


try:
    from .._native import gate_finds_change as _gate_finds_change, sampled_rows_exceed as _native_sampled_rows_exceed
except ImportError:  # built without the pybind module: numpy's tau test alone
    _gate_finds_change = _native_sampled_rows_exceed = None


def sampled_rows_exceed(frame: np.ndarray, reference: np.ndarray, bound: float) -> bool:
    """Some element of every 32nd row (the first of `_blocks`) is further than `bound` from its reference, or NaN/Inf:
    a moving camera's frame is told from a still one here, reading a 32nd of it. One native pass for contiguous
    float32 arrays (numpy's ufuncs cost ~80 us here on the caches a run has just emptied), numpy otherwise."""
    if (_native_sampled_rows_exceed is not None and frame.dtype == np.float32 and reference.dtype == np.float32
            and frame.flags.c_contiguous and reference.flags.c_contiguous):
        axis = _row_axis(frame.shape)
        return _native_sampled_rows_exceed(frame, reference, float(bound), -1 if axis is None else axis,
                                           SAMPLE_ROW_STEP)
    return _block_exceeds(frame, reference, _blocks(frame.shape)[0], bound)


def gate_sees_nothing(gate: FrameGate, frame: np.ndarray, reference: np.ndarray,
                      map_in: np.ndarray | None = None) -> bool:
    """The gate would find no change: for the block rule, its own engine finds no block changed where `map_in`
    (the run's change map) lets it look; for a Delta op as gate, every pixel within its tau (rule 2, NaN and Inf
    changed). Without a change map, a sampled pixel past the rule's bound on every pixel (tau; the block rule's
    gate_hard) answers "changed" first, reading a 32nd of the frame. Then one pass of the op library's gate engine,
    no copy (docs/results.md#frame-test-native); numpy's blockwise test where the module is not built (the block
    rule then passes only frames within tau everywhere, which it would pass too: gate_hard >= tau)."""
    if frame.shape != reference.shape:
        return False
    bound = gate.tau if gate.block_rule is None else gate.block_rule.get("gate_hard", -1.0)
    if map_in is None and bound >= 0 and sampled_rows_exceed(frame, reference, bound):
        return False  # (with a map, the pixels it leaves out may change as they like: the engine alone decides)
    if _gate_finds_change is not None and frame.ndim == 4 and frame.dtype == np.float32:
        rule = gate.block_rule or {"rule": "pixel"}
        return not _gate_finds_change(frame, reference, map_in, threshold=float(gate.tau), **rule)
    return within_tau(frame, reference, gate.tau)


def _bits(array: np.ndarray) -> np.ndarray:
    kinds = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
    return array.view(kinds[array.itemsize]) if array.itemsize in kinds else array.view(np.uint8)


def bitwise_equal(frame: np.ndarray, previous: np.ndarray) -> bool:
    if frame.shape != previous.shape or frame.dtype != previous.dtype:
        return False
    frame, previous = _bits(frame), _bits(previous)
    return all(np.array_equal(frame[block], previous[block]) for block in _blocks(frame.shape))


def all_finite(array: np.ndarray) -> bool:
    return array.size == 0 or bool(np.isfinite(array.min()) and np.isfinite(array.max()))  # NaN propagates
