"""The delta rules (docs/design.md "The ops"): when the state is empty, which pixels changed, which outputs their
receptive fields reach, when everything is recomputed; and the checks of thresholds and maps."""
from __future__ import annotations

import numpy as np

from .dense import _or_pool
from .window import _Window

def state_is_empty(X_ref) -> bool:
    """Rule 1: a state with a zero-sized dimension (the first frame, a reset) is empty."""
    return X_ref is None or 0 in np.shape(X_ref)


def changed_pixels(X, X_ref, tau, map_in=None) -> np.ndarray:
    """Rules 1-2: bool [N,H,W], True where an input pixel changed. Every pixel is changed when the state
    is empty or its shape differs from X's. Otherwise pixel p changed iff NOT(max_c |X - X_ref| <= tau),
    so a NaN/Inf in either tensor always counts as a change. With `map_in` only marked pixels can be
    changed (the producer promised the others did not)."""
    X = np.asarray(X, dtype=np.float32)
    _check_threshold(tau)
    n, _, h, w = X.shape
    if map_in is not None:
        map_in = _check_map(map_in, (n, 1, h, w), "map_in")
    if state_is_empty(X_ref) or np.shape(X_ref) != X.shape:
        return np.ones((n, h, w), dtype=bool)
    X_ref = np.asarray(X_ref, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        changed = np.any(~(np.abs(X - X_ref) <= np.float32(tau)), axis=1)
    if map_in is not None:
        changed &= map_in[:, 0] != 0
    return changed


def output_recompute_mask(changed, in_hw, out_hw, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0),
                          dilations=(1, 1), ceil_mode=0) -> np.ndarray:
    """Rule 4: bool [N,Ho,Wo], the OR-pool of the input change mask [N,H,W] over the window: an output
    pixel is recomputed iff a tap of its window (padding excluded) reads a changed input pixel.
    `pads` are explicit (see resolve_pads); `ceil_mode` only matters for pools."""
    changed = np.asarray(changed, dtype=bool)
    if changed.shape[-2:] != tuple(in_hw):
        raise ValueError(f"change mask {changed.shape} does not match in_hw {tuple(in_hw)}")
    win = _Window.resolve(in_hw, kernel_shape, strides, pads, dilations, ceil_mode=ceil_mode, out_hw=out_hw)
    return _or_pool(changed, win)


def apply_dense_fraction(recompute, dense_fraction=0.5) -> np.ndarray:
    """The `dense_fraction` knob (docs/ops.md): per batch item, when more than this fraction of the
    output pixels must be recomputed, all of them are (the C++ kernels do the same, and report it in
    map_out)."""
    recompute = np.array(recompute, dtype=bool, copy=True)
    n = recompute.shape[0]
    pixels = int(np.prod(recompute.shape[1:]))
    if pixels == 0:
        return recompute
    # The ops hold dense_fraction as a float32 attribute and compare count > fraction * pixels in double.
    limit = float(np.float32(dense_fraction)) * pixels
    recompute[recompute.reshape(n, -1).sum(axis=1) > limit] = True
    return recompute


def _check_threshold(tau) -> None:
    if not (np.isfinite(tau) and tau >= 0):
        raise ValueError(f"threshold must be finite and >= 0, got {tau}")


def _check_map(map_in, expected_shape, what) -> np.ndarray:
    map_in = np.asarray(map_in)
    if map_in.shape != tuple(expected_shape):
        raise ValueError(f"{what} has shape {map_in.shape}, expected {tuple(expected_shape)}")
    return map_in
