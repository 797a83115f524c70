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


def padded_channels(channels: int, b: int) -> int:
    """roundup(C, b): the channels a blocked tensor of C logical channels holds (ops/common/channel_block.h
    padded_channels); its pad lanes C..roundup(C, b)-1 are exactly zero."""
    return -(-int(channels) // int(b)) * int(b)


def _check_4d(x: np.ndarray, b: int, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} must be 4-D [N, C, H, W], got shape {x.shape}")
    if b < 1:
        raise ValueError(f"the channel block must be >= 1, got {b}")


def _check_blockable(x: np.ndarray, b: int, what: str) -> None:
    _check_4d(x, b, what)
    if x.shape[1] % b != 0:
        raise ValueError(f"{what} has {x.shape[1]} channels, not a multiple of the channel block {b}")


def to_blocked(x, b: int) -> np.ndarray:
    """NCHW [N, C, H, W] -> [N, roundup(C, b), H, W] holding [N][C/b][H][W][b] memory, the pad lanes zero
    (b = 1: a copy)."""
    x = np.asarray(x)
    _check_4d(x, b, "X")
    n, c, h, w = x.shape
    cb = padded_channels(c, b)
    if cb != c:
        x = np.concatenate([x, np.zeros((n, cb - c, h, w), x.dtype)], axis=1)
    return np.ascontiguousarray(x.reshape(n, cb // b, b, h, w).transpose(0, 1, 3, 4, 2)).reshape(n, cb, h, w)


def from_blocked(x, b: int, channels: int | None = None) -> np.ndarray:
    """The inverse of to_blocked: [N, Cb, H, W] holding [N][Cb/b][H][W][b] memory -> NCHW [N, channels, H, W]
    (default: all Cb); Cb must be roundup(channels, b)."""
    x = np.asarray(x)
    _check_blockable(x, b, "X")
    n, cb, h, w = x.shape
    c = cb if channels is None else int(channels)
    if padded_channels(c, b) != cb:
        raise ValueError(f"X has {cb} channels, expected roundup({c}, {b}) = {padded_channels(c, b)}")
    y = x.reshape(n, cb // b, h, w, b).transpose(0, 1, 4, 2, 3).reshape(n, cb, h, w)
    return np.ascontiguousarray(y[:, :c])


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


def run_blocked(step, block: int | None, X, X_ref, Y_prev, input_blocked: bool = True,
                in_channels: int | None = None, out_channels: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Delta op's rules on blocked tensors: step(X, X_ref, Y_prev) -> (Y, X_ref_next, map_out) computes in NCHW;
    X, the state and the outputs hold blocked memory of `block` (default: the library's); with input_blocked False
    (DeltaConv's "blocked_out") X and X_ref are NCHW and only Y_prev and Y are blocked. in_channels and
    out_channels are the logical channel counts C and M (DeltaConv: from W; default: X's count, nothing cropped):
    the blocked X holds roundup(C, b) channels, Y roundup(M, b) with zero pad lanes. A state of another shape
    than its blocked tensor (e.g. written under another b) is no state (rule 1)."""
    b = library_channel_block() if block is None else int(block)
    X = np.asarray(X, dtype=np.float32)
    if input_blocked:
        _check_blockable(X, b, "X")
        if in_channels is not None and X.shape[1] != padded_channels(in_channels, b):
            raise ValueError(f"X has {X.shape[1]} channels, expected roundup({in_channels}, {b}) = "
                             f"{padded_channels(in_channels, b)}")

    def unblock(state, channels):
        if state is None or np.ndim(state) != 4 or 0 in np.shape(state):
            return state
        if channels is None:
            channels = np.shape(state)[1]
        if np.shape(state)[1] != padded_channels(channels, b):
            return np.zeros((0, 0, 0, 0), np.float32)  # another b's state: it must not match the cropped X
        return from_blocked(state, b, channels)

    if not input_blocked:
        Y, X_ref_next, map_out = step(X, X_ref, unblock(Y_prev, out_channels))
        return to_blocked(Y, b), X_ref_next, map_out
    c = X.shape[1] if in_channels is None else in_channels
    Y, X_ref_next, map_out = step(from_blocked(X, b, c), unblock(X_ref, c), unblock(Y_prev, out_channels))
    return to_blocked(Y, b), to_blocked(X_ref_next, b), map_out
