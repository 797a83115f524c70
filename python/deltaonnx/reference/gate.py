"""DeltaGate, the input gate: the pixel rule and the block rule, and the parameters both read."""
from __future__ import annotations

import numpy as np

from ..graph_passes.protocol import DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD
from .rules import _check_threshold, state_is_empty

GATE_RULES = ("pixel", "block")


def gate_map_resolution(frame_hw, rule: str, block: int) -> tuple[tuple[int, int], ...]:
    """The shapes [H, W] an external change map of DeltaGate may have: the frame's, or (block rule) one
    cell per block, ceil(H/k) x ceil(W/k)."""
    h, w = (int(v) for v in frame_hw)
    if rule == "block" and block > 1:
        return ((h, w), (-(-h // block), -(-w // block)))
    return ((h, w),)


def _gate_marks(map_in, n: int, hw, rule: str, block: int) -> np.ndarray | None:
    """map_in at frame or block resolution as bool [N,H,W] (a block cell marks its k x k pixels)."""
    if map_in is None or 0 in np.shape(map_in):
        return None
    map_in = np.asarray(map_in)
    shapes = gate_map_resolution(hw, rule, block)
    if map_in.ndim != 4 or map_in.shape[:2] != (n, 1) or map_in.shape[2:] not in shapes:
        expected = " or ".join(str((n, 1) + s) for s in shapes)
        raise ValueError(f"map_in has shape {map_in.shape}, expected {expected}")
    marks = map_in[:, 0] != 0
    if marks.shape[1:] != tuple(hw):
        marks = marks.repeat(block, axis=1).repeat(block, axis=2)[:, :hw[0], :hw[1]]
    return marks


def _block_sums(d: np.ndarray, block: int) -> np.ndarray:
    """Sum of d [N,C,H,W] over each k x k block (edge blocks smaller): [N,C,ceil(H/k),ceil(W/k)], in float32
    and in the engines' order: the block's rows added column by column top to bottom, then the column sums
    added left to right (so every SIMD variant and the CUDA kernel round exactly like this)."""
    n, c, h, w = d.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.zeros((n, c, hb * block, wb * block), np.float32)
    padded[:, :, :h, :w] = d
    rows = padded.reshape(n, c, hb, block, wb * block)
    columns = rows[:, :, :, 0].copy()
    for i in range(1, block):
        columns = columns + rows[:, :, :, i]
    cells = columns.reshape(n, c, hb, wb, block)
    sums = cells[..., 0].copy()
    for j in range(1, block):
        sums = sums + cells[..., j]
    return sums


def delta_gate(X, X_ref=None, map_in=None, *, rule="block", threshold=0.0, gate_block=DEFAULT_GATE_BLOCK,
               gate_hard=None):
    """DeltaGate (docs/ops.md): the input gate of docs/design.md#rule-1 to #rule-3, in its pixel form (rule 2) or its
    block form (rule 2b). Returns (X_gated, map_out): X_gated is the gated frame that every later op reads
    and the next run's X_ref; map_out uint8 [N,1,H,W] marks the pixels whose value moved to X this run.

    Block rule: the frame is cut into k x k blocks (edge blocks smaller); block b changed iff NOT(|sum_b
    (X - X_ref)| <= tau * |b|) for some channel, or NOT(max_c |X - X_ref| <= tau_hard) at some pixel of b
    (so a NaN/Inf in b, in either tensor, always counts). Pixel rule: the same with k = 1 and tau_hard =
    tau. An external map (frame or block resolution) restricts the gate to its marked pixels: unmarked
    pixels count as unchanged (difference 0) and keep their reference, even inside a changed block; an
    empty map (a zero-sized dimension) is no map."""
    if rule not in GATE_RULES:
        raise ValueError(f"rule must be one of {GATE_RULES}, got {rule!r}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"DeltaGate is 2-D NCHW: X {X.shape}")
    _check_threshold(threshold)
    block, hard = gate_parameters(rule, threshold, gate_block, gate_hard)
    n, _, h, w = X.shape
    marks = _gate_marks(map_in, n, (h, w), rule, gate_block)
    if state_is_empty(X_ref) or np.shape(X_ref) != X.shape:  # rule 1
        return X.copy(), np.ones((n, 1, h, w), np.uint8)
    X_ref = np.asarray(X_ref, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        d = X - X_ref
        if marks is not None:
            d = np.where(marks[:, None], d, np.float32(0))
        hot = np.any(~(np.abs(d) <= np.float32(hard)), axis=1)  # [N,H,W]
        # (with the pixel rule, k = 1 and tau_hard = tau, the block test repeats the pixel test)
        hb, wb = -(-h // block), -(-w // block)
        counts = np.minimum(block, h - np.arange(hb) * block)[:, None] * np.minimum(block, w - np.arange(wb) * block)
        limit = np.float32(threshold) * counts.astype(np.float32)
        moved = np.any(~(np.abs(_block_sums(d, block)) <= limit), axis=1)
        hot_blocks = _block_sums(hot[:, None].astype(np.float32), block)[:, 0] > 0
        changed_blocks = moved | hot_blocks
        changed_pixels = changed_blocks.repeat(block, axis=1).repeat(block, axis=2)[:, :h, :w]
    if marks is not None:
        changed_pixels = changed_pixels & marks
    X_gated = np.where(changed_pixels[:, None], X, X_ref)  # rule 3: the whole block's reference moves
    return X_gated.astype(np.float32), changed_pixels[:, None].astype(np.uint8)


def gate_parameters(rule: str, threshold: float, gate_block: int, gate_hard) -> tuple[int, float]:
    """(k, tau_hard) the gate applies: the pixel rule is the block rule with k = 1 and tau_hard = tau;
    tau_hard defaults to DEFAULT_GATE_HARD x tau."""
    if rule == "pixel":
        return 1, float(threshold)
    if int(gate_block) < 1:
        raise ValueError(f"gate_block must be >= 1, got {gate_block}")
    # float32 as the op holds its attributes (the default multiplied in float32 as the op does)
    tau = np.float32(threshold)
    hard = np.float32(DEFAULT_GATE_HARD) * tau if gate_hard is None or gate_hard < 0 else np.float32(gate_hard)
    if not (hard >= tau and np.isfinite(hard)):
        raise ValueError(f"gate_hard must be finite and >= threshold ({threshold}), got {hard}")
    return int(gate_block), float(hard)
