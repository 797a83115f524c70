"""Channel-blocked memory in numpy (docs/ops.md#blocked-layout): [N, C, H, W] arrays whose memory is
[N][C/b][H][W][b], the conversions to and from NCHW, and a Delta op's rules run on blocked tensors. The numpy
reference (reference/) and the tests use them; b is the op library's unless given."""
from __future__ import annotations

import numpy as np

from ._lib import channel_block
from .graph_passes.delta_ops import LAYOUT_BLOCKED, LAYOUT_BLOCKED_OUT, LAYOUT_NCHW, LAYOUTS


def library_channel_block() -> int:
    """b of the built CPU op library (common/channel_block.h; DELTAONNX_CHANNEL_BLOCK forces it for tests)."""
    b = channel_block("cpu")
    if b is None:
        raise RuntimeError("the blocked layout needs the op library's channel block: build deltaonnx._native "
                           "or pass the block explicitly")
    return b


def _check_blockable(x: np.ndarray, b: int, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} must be 4-D [N, C, H, W], got shape {x.shape}")
    if b < 1 or x.shape[1] % b != 0:
        raise ValueError(f"{what} has {x.shape[1]} channels, not a multiple of the channel block {b}")


def to_blocked(x, b: int) -> np.ndarray:
    """NCHW [N, C, H, W] -> the same shape holding [N][C/b][H][W][b] memory (b = 1: a copy)."""
    x = np.asarray(x)
    _check_blockable(x, b, "X")
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, b, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, c, h, w)


def from_blocked(x, b: int) -> np.ndarray:
    """The inverse of to_blocked: [N, C, H, W] holding [N][C/b][H][W][b] memory -> NCHW."""
    x = np.asarray(x)
    _check_blockable(x, b, "X")
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // b, h, w, b).transpose(0, 1, 4, 2, 3)).reshape(n, c, h, w)


REORDER_TARGETS = (LAYOUT_BLOCKED, LAYOUT_NCHW)  # DeltaReorder's attribute 'to'


def blocked_sides(layout, gate, conv: bool = True) -> tuple[bool, bool]:
    """The attribute 'layout' of DeltaConv/DeltaPool, checked as the ops check it: (X and X_ref blocked, Y and
    Y_prev blocked). "blocked_out" (DeltaConv only) blocks the output side alone."""
    layout = layout.decode() if isinstance(layout, bytes) else layout
    allowed = LAYOUTS + ((LAYOUT_BLOCKED_OUT,) if conv else ())
    if layout not in allowed:
        raise ValueError(f"layout must be one of {allowed}, got {layout!r}")
    gate = gate.decode() if isinstance(gate, bytes) else gate
    if layout != LAYOUT_NCHW and gate != "pixel":
        raise ValueError(f'layout "{layout}" needs gate "pixel"')
    return layout == LAYOUT_BLOCKED, layout != LAYOUT_NCHW


def run_blocked(step, block: int | None, X, X_ref, Y_prev, input_blocked: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Delta op's rules on blocked tensors: step(X, X_ref, Y_prev) -> (Y, X_ref_next, map_out) computes in NCHW;
    X, the state and the outputs hold blocked memory of `block` (default: the library's); with input_blocked False
    (DeltaConv's "blocked_out") X and X_ref are NCHW and only Y_prev and Y are blocked. A state whose channels
    are no multiple of b is passed on as it is: it cannot match X, so rule 1 discards it."""
    b = library_channel_block() if block is None else int(block)
    X = np.asarray(X, dtype=np.float32)
    if input_blocked:
        _check_blockable(X, b, "X")

    def unblock(state):
        if state is None or np.ndim(state) != 4 or np.shape(state)[1] % b != 0:
            return state
        return from_blocked(state, b)

    if not input_blocked:
        Y, X_ref_next, map_out = step(X, X_ref, unblock(Y_prev))
        return to_blocked(Y, b), X_ref_next, map_out
    Y, X_ref_next, map_out = step(from_blocked(X, b), unblock(X_ref), unblock(Y_prev))
    return to_blocked(Y, b), to_blocked(X_ref_next, b), map_out
