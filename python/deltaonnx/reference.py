"""Numpy reference of the deltaonnx custom ops: the test oracle for the C++ and CUDA kernels.

Written for clarity, not speed: every function is a literal reading of a rule of docs/design.md ("The ops") with
the signatures of docs/ops.md. The window geometry (output extent, padding, which input pixels a window
tap reads) lives in one place, `_Window`, and conv, max-pool and the change-map OR-pool all iterate over
the same tap views, so they cannot disagree on what a receptive field is.

Conventions: NCHW float32 tensors; change maps are uint8 [N,1,H,W], nonzero = marked; pads are ONNX's
[top, left, bottom, right]; state is "empty" when any dimension of X_ref is zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .blocked_memory import (LAYOUTS, REORDER_TARGETS, blocked_sides, from_blocked, library_channel_block,  # noqa: F401
                             run_blocked, to_blocked)
# DOMAIN: the ops' domain; the block gate's defaults (k, and tau_hard as a multiple of tau) as the converter and
# the ops (gate_engine.h) use them.
from .graph_passes.protocol import DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD, DOMAIN

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

# Activation names DeltaConv accepts (ops/common/activation.h parses the same list), mapped to the
# canonical name and the default activation_params.
_ACTIVATION_ALIASES = {
    "": "", "None": "", "Identity": "",
    "Relu": "Relu", "LeakyRelu": "LeakyRelu", "Clip": "Clip", "Relu6": "Clip",
    "Sigmoid": "Sigmoid", "SiLU": "SiLU", "Swish": "SiLU",
    "HardSigmoid": "HardSigmoid", "HardSwish": "HardSwish", "PRelu": "PRelu", "Tanh": "Tanh",
    "Softmax": "Softmax",  # over the channels of each pixel (channel_axis), or each group of [G] of them
}
_ACTIVATION_DEFAULTS = {
    "LeakyRelu": (0.01,),
    "Clip": (-np.inf, np.inf),
    "HardSigmoid": (0.2, 0.5),
}


# --------------------------------------------------------------------------------------------------
# Geometry (shared by conv, pool and the change-map OR-pool)
# --------------------------------------------------------------------------------------------------

def _pair(values, name: str, default: int) -> tuple[int, int]:
    if values is None or len(values) == 0:
        return (default, default)
    values = tuple(int(v) for v in values)
    if len(values) != 2:
        raise ValueError(f"{name} must hold 2 values for a 2-D window, got {list(values)}")
    return values


def _same_padding(in_size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX auto_pad SAME_*: total padding so that out == ceil(in / stride); the odd pixel goes to the
    end (SAME_UPPER) or the beginning (SAME_LOWER)."""
    out = -(-in_size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in_size)
    begin = total // 2 if upper else total - total // 2
    return begin, total - begin


def resolve_pads(in_hw, kernel_shape, strides=(1, 1), dilations=(1, 1), pads=None, auto_pad="NOTSET"):
    """Explicit [top, left, bottom, right] pads of a 2-D window, ONNX rules for `auto_pad`
    (NOTSET: `pads` as given, default zeros; VALID: zeros; SAME_UPPER/SAME_LOWER: out = ceil(in/stride)).
    Geometry of docs/design.md rule 4 (which input pixels an output pixel reads)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "":  # ORT's reading of an empty auto_pad, and the ops'
        auto_pad = "NOTSET"
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    kernel_shape = _pair(kernel_shape, "kernel_shape", 1)
    strides = _pair(strides, "strides", 1)
    dilations = _pair(dilations, "dilations", 1)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        upper = auto_pad == "SAME_UPPER"
        top, bottom = _same_padding(int(in_hw[0]), kernel_shape[0], strides[0], dilations[0], upper)
        left, right = _same_padding(int(in_hw[1]), kernel_shape[1], strides[1], dilations[1], upper)
        return (top, left, bottom, right)
    if pads is None or len(pads) == 0:
        return (0, 0, 0, 0)
    pads = tuple(int(p) for p in pads)
    if len(pads) != 4:
        raise ValueError(f"pads must hold 4 values [top, left, bottom, right], got {list(pads)}")
    return pads


def _output_extent(in_size, kernel, stride, dilation, pad_begin, pad_end, ceil_mode) -> int:
    """Output extent along one axis, ONNX rules: floor, or ceil for ceil_mode pools where the last window
    must start inside the input or the begin padding (ORT and PyTorch agree on this)."""
    span = in_size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= in_size + pad_begin:
            out -= 1
        return out
    return span // stride + 1


@dataclass(frozen=True)
class _Window:
    """A resolved 2-D sliding window: output pixel (oy, ox) reads input pixel
    (oy*stride_y - pad_top + ky*dil_y, ox*stride_x - pad_left + kx*dil_x) for each tap (ky, kx)."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]

    @classmethod
    def resolve(cls, in_hw, kernel_shape, strides=None, pads=None, dilations=None, auto_pad="NOTSET",
                ceil_mode=0, out_hw=None) -> "_Window":
        in_hw = (int(in_hw[0]), int(in_hw[1]))
        kernel = _pair(kernel_shape, "kernel_shape", 1)
        strides = _pair(strides, "strides", 1)
        dilations = _pair(dilations, "dilations", 1)
        if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1:
            raise ValueError(f"kernel_shape, strides and dilations must be >= 1, got {kernel}, {strides}, {dilations}")
        pads = resolve_pads(in_hw, kernel, strides, dilations, pads, auto_pad)
        if min(pads) < 0:
            raise ValueError(f"negative pads are not supported, got {list(pads)}")
        computed = tuple(
            _output_extent(in_hw[a], kernel[a], strides[a], dilations[a], pads[a], pads[a + 2], bool(ceil_mode))
            for a in range(2)
        )
        if out_hw is not None and tuple(int(v) for v in out_hw) != computed:
            raise ValueError(f"out_hw {tuple(out_hw)} does not match the window's output extent {computed}")
        return cls(in_hw, computed, kernel, strides, dilations, pads)

    def padded(self, x: np.ndarray, fill) -> np.ndarray:
        """x [..., H, W] padded with `fill` so every tap view is in bounds (ceil_mode windows may reach
        past the end padding: those taps read `fill` too)."""
        pad_width = [(0, 0)] * (x.ndim - 2)
        for a in range(2):
            begin, end = self.pads[a], self.pads[a + 2]
            reach = (self.out_hw[a] - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a] + 1
            end = max(end, reach - self.in_hw[a] - begin, 0)
            pad_width.append((begin, end))
        return np.pad(x, pad_width, mode="constant", constant_values=fill)

    def taps(self, padded: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(ky, kx, view [..., Ho, Wo]): the input value each output pixel reads at tap (ky, kx)."""
        (ho, wo), (sy, sx), (dy, dx) = self.out_hw, self.strides, self.dilations
        for ky in range(self.kernel[0]):
            for kx in range(self.kernel[1]):
                y0, x0 = ky * dy, kx * dx
                yield ky, kx, padded[..., y0:y0 + (ho - 1) * sy + 1:sy, x0:x0 + (wo - 1) * sx + 1:sx]


# --------------------------------------------------------------------------------------------------
# Dense ops
# --------------------------------------------------------------------------------------------------

def conv2d(X, W, B=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1) -> np.ndarray:
    """Dense 2-D NCHW convolution (ONNX Conv, explicit pads), float64 accumulation, float32 result.
    The conv(.) of docs/design.md rules 4-5."""
    X = np.asarray(X)
    W = np.asarray(W)
    n, c, h, w = X.shape
    m, c_per_group, kh, kw = W.shape
    group = int(group)
    if c != c_per_group * group or m % group != 0:
        raise ValueError(f"Conv shapes do not fit group={group}: X {X.shape}, W {W.shape}")
    win = _Window.resolve((h, w), (kh, kw), strides, pads, dilations)
    ho, wo = win.out_hw
    m_per_group = m // group
    xp = win.padded(X.astype(np.float64), 0.0)
    xp = xp.reshape(n, group, c_per_group, xp.shape[-2], xp.shape[-1])
    wg = W.astype(np.float64).reshape(group, m_per_group, c_per_group, kh, kw)
    acc = np.zeros((n, group, m_per_group, ho, wo), dtype=np.float64)
    for ky, kx, view in win.taps(xp):
        acc += np.einsum("ngchw,gmc->ngmhw", view, wg[:, :, :, ky, kx])
    acc = acc.reshape(n, m, ho, wo)
    if B is not None and np.asarray(B).size:
        acc += np.asarray(B, dtype=np.float64).reshape(1, m, 1, 1)
    return acc.astype(np.float32)


def maxpool2d(X, *, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0) -> np.ndarray:
    """Dense 2-D max pooling, ONNX MaxPool semantics: padding never wins the max, ceil_mode per ONNX/ORT.
    NaN in a window gives NaN; otherwise the max of ORT's initial value, the lowest float32, and the window's
    inputs, so a window of -inf or lying entirely in padding gives the lowest float (docs/ops.md).
    The pool(.) of docs/design.md#rule-4 and #rule-5 for DeltaPool."""
    X = np.asarray(X, dtype=np.float32)
    win = _Window.resolve(X.shape[-2:], kernel_shape, strides, pads, dilations, ceil_mode=ceil_mode)
    # Padding reads -inf so it never wins; NaN inputs propagate through np.maximum.
    xp = win.padded(X, -np.inf)
    y = np.full(X.shape[:-2] + win.out_hw, np.finfo(np.float32).min, dtype=np.float32)
    for _, _, view in win.taps(xp):
        y = np.maximum(y, view)
    return y


def _or_pool(mask: np.ndarray, win: _Window) -> np.ndarray:
    """OR of `mask` [..., H, W] over every window tap (padding reads False): [..., Ho, Wo]."""
    out = np.zeros(mask.shape[:-2] + win.out_hw, dtype=bool)
    mp = win.padded(mask.astype(bool), False)
    for _, _, view in win.taps(mp):
        out |= view
    return out


def activation(x, name="", params=(), channel_axis=1) -> np.ndarray:
    """The activation DeltaConv fuses (docs/ops.md `activation`, `activation_params`), applied in float32
    with ONNX's formulas: the act(.) of docs/design.md rule 5. PRelu takes one slope or one per channel along
    `channel_axis`; Softmax normalises over `channel_axis` at each pixel, or with params [G] over each group of G
    consecutive channels (a YOLO DFL head's 16 bins per box side)."""
    x = np.asarray(x, dtype=np.float32)
    if isinstance(name, bytes):
        name = name.decode()
    if name not in _ACTIVATION_ALIASES:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(_ACTIVATION_ALIASES)}")
    kind = _ACTIVATION_ALIASES[name]
    params = tuple(float(p) for p in (params if params is not None else ()))
    if not params:
        params = (0.0, 6.0) if name == "Relu6" else _ACTIVATION_DEFAULTS.get(kind, ())
    p = np.asarray(params, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "":
            return x.copy()
        if kind == "Relu":
            return np.where(x > 0, x, np.where(np.isnan(x), x, np.float32(0)))
        if kind == "LeakyRelu":
            return np.where(x >= 0, x, p[0] * x).astype(np.float32)
        if kind == "Clip":
            if p.size != 2:
                raise ValueError(f"Clip takes activation_params [min, max], got {list(params)}")
            return np.where(x < p[0], p[0], np.where(x > p[1], p[1], x)).astype(np.float32)
        if kind == "Sigmoid":
            return _sigmoid(x)
        if kind == "SiLU":
            return (x * _sigmoid(x)).astype(np.float32)
        if kind == "HardSigmoid":
            if p.size != 2:
                raise ValueError(f"HardSigmoid takes activation_params [alpha, beta], got {list(params)}")
            return np.clip(p[0] * x + p[1], 0, 1).astype(np.float32)
        if kind == "HardSwish":
            return (x * np.clip(x * np.float32(1 / 6) + np.float32(0.5), 0, 1)).astype(np.float32)
        if kind == "PRelu":
            if p.size == 1:
                slope = p[0]
            elif x.ndim > channel_axis and p.size == x.shape[channel_axis]:
                shape = [1] * x.ndim
                shape[channel_axis] = p.size
                slope = p.reshape(shape)
            else:
                raise ValueError(f"PRelu takes 1 slope or one per channel, got {p.size} for shape {x.shape}")
            return np.where(x >= 0, x, slope * x).astype(np.float32)
        if kind == "Tanh":
            return np.tanh(x)
        if kind == "Softmax":
            axis = channel_axis % x.ndim
            channels = x.shape[axis]
            group = _softmax_group(params, channels)
            grouped = x.reshape(x.shape[:axis] + (channels // group, group) + x.shape[axis + 1:])
            e = np.exp(grouped - grouped.max(axis=axis + 1, keepdims=True))
            return (e / e.sum(axis=axis + 1, keepdims=True)).astype(np.float32).reshape(x.shape)
    raise AssertionError(kind)  # every canonical name is handled above


def _softmax_group(params: tuple, channels: int) -> int:
    """The channels one Softmax normalises together: all of them, or G of activation_params [G] (a positive
    integer dividing the channel count), as ops/common/conv_activation.h checks."""
    if not params:
        return channels
    group = params[0]
    if len(params) != 1 or not (1 <= group <= 65536 and group == int(group)) or channels % int(group):
        raise ValueError(f"Softmax takes activation_params [G], G a positive integer dividing the {channels} "
                         f"channels, got {list(params)}")
    return int(group)


_activate = activation  # DeltaConv's `activation` attribute shadows the function name there


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The delta rules
# --------------------------------------------------------------------------------------------------

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


def _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win: _Window, compute_dense,
                drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK, gate_hard=None):
    """Rules 1-5 around any windowed op: `compute_dense(X_ref_next)` gives the op's full output.
    drop_reference: no X_ref is kept (allowed at tau = 0 with a change map, docs/design.md#dropped-references): the map's marks
    are the changed pixels, the state is Y_prev alone, and X_ref_next is an empty [0,0,0,0]."""
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if drop_reference:
        if map_in is None or float(threshold) != 0.0:
            raise ValueError("without X_ref the op needs a change map and threshold 0")
        map_in = _check_map(map_in, (n, 1) + X.shape[2:], "map_in")
        out_shape = compute_dense(X[:0]).shape[1:]
        fresh = state_is_empty(Y_prev) or np.shape(Y_prev)[1:] != out_shape or np.shape(Y_prev)[0] != n
        changed = np.ones((n,) + X.shape[2:], bool) if fresh else map_in[:, 0] != 0
        y_full = compute_dense(X)
        recompute = (np.ones((n,) + win.out_hw, dtype=bool) if fresh
                     else apply_dense_fraction(_or_pool(changed, win), dense_fraction))
        Y = y_full if fresh else np.where(recompute[:, None], y_full, np.asarray(Y_prev, np.float32))
        return Y.astype(np.float32), np.zeros((0, 0, 0, 0), np.float32), recompute[:, None].astype(np.uint8)
    gate = gate.decode() if isinstance(gate, bytes) else gate  # as the evaluator hands string attributes
    if gate not in GATE_RULES:
        raise ValueError(f"gate must be one of {GATE_RULES}, got {gate!r}")
    fresh = state_is_empty(X_ref) or np.shape(X_ref) != X.shape
    if gate == "block":  # rule 2b: DeltaGate's verdict, and whole blocks' references move (rule 3)
        if map_in is not None:
            map_in = _check_map(map_in, (n, 1) + X.shape[2:], "map_in")
        X_ref_next, gated = delta_gate(X, None if fresh else X_ref, map_in, rule="block", threshold=threshold,
                                       gate_block=gate_block, gate_hard=gate_hard)
        changed = gated[:, 0] != 0
    else:
        changed = changed_pixels(X, X_ref, threshold, map_in)
        # Rule 3: the reference moves only where the pixel counts as changed.
        X_ref_next = X.copy() if fresh else np.where(changed[:, None], X, np.asarray(X_ref, dtype=np.float32))
    y_full = compute_dense(X_ref_next)
    if fresh:
        recompute = np.ones((n,) + win.out_hw, dtype=bool)
    else:
        Y_prev = np.asarray(Y_prev, dtype=np.float32) if Y_prev is not None else np.zeros((0, 0, 0, 0), np.float32)
        if Y_prev.shape != y_full.shape:
            raise ValueError(f"Y_prev has shape {Y_prev.shape}, expected {y_full.shape} (the shape of Y)")
        recompute = apply_dense_fraction(_or_pool(changed, win), dense_fraction)
    Y = y_full if fresh else np.where(recompute[:, None], y_full, Y_prev).astype(np.float32)
    map_out = recompute[:, None].astype(np.uint8)
    return Y, X_ref_next, map_out


def delta_conv(X, W, B=None, X_ref=None, Y_prev=None, map_in=None, *, kernel_shape=None, strides=None,
               pads=None, dilations=None, group=1, auto_pad="NOTSET", activation="", activation_params=(),
               threshold=0.0, dense_fraction=0.5, drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK,
               gate_hard=None, layout="nchw", channel_block=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeltaConv (docs/ops.md), rules 1-5: returns (Y, X_ref_next, map_out) with
    Y = where(recompute, act(conv(X_ref_next) + B), Y_prev) and map_out the uint8 recompute mask.
    gate "block" decides changes by rule 2b (delta_gate's verdict, k = gate_block, tau_hard = gate_hard).
    layout "blocked": X, X_ref, Y_prev, Y and X_ref_next hold blocked memory (docs/ops.md#blocked-layout) of
    channel_block (default: the library's); "blocked_out": Y_prev and Y only."""
    input_blocked, output_blocked = blocked_sides(layout, gate)
    if output_blocked:
        args = dict(kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations, group=group,
                    auto_pad=auto_pad, activation=activation, activation_params=activation_params, threshold=threshold,
                    dense_fraction=dense_fraction, drop_reference=drop_reference, gate=gate, gate_block=gate_block,
                    gate_hard=gate_hard)
        return run_blocked(lambda x, x_ref, y_prev: delta_conv(x, W, B, x_ref, y_prev, map_in, **args), channel_block,
                           X, X_ref, Y_prev, input_blocked)
    X = np.asarray(X, dtype=np.float32)
    W = np.asarray(W, dtype=np.float32)
    if X.ndim != 4 or W.ndim != 4:
        raise ValueError(f"DeltaConv is 2-D NCHW: X {X.shape}, W {W.shape}")
    kernel = tuple(W.shape[2:]) if not kernel_shape else _pair(kernel_shape, "kernel_shape", 1)
    if kernel != tuple(W.shape[2:]):
        raise ValueError(f"kernel_shape {kernel} does not match W {W.shape}")
    win = _Window.resolve(X.shape[2:], kernel, strides, pads, dilations, auto_pad)
    act_name, act_params = activation, activation_params

    def dense(x_ref_next):
        y = conv2d(x_ref_next, W, B, strides=win.strides, pads=win.pads, dilations=win.dilations, group=group)
        return _activate(y, act_name, act_params, channel_axis=1)

    return _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win, dense, drop_reference,
                       gate, gate_block, gate_hard)


def delta_pool(X, X_ref=None, Y_prev=None, map_in=None, *, kernel_shape, strides=None, pads=None,
               dilations=None, auto_pad="NOTSET", ceil_mode=0, threshold=0.0, dense_fraction=0.5,
               storage_order=0, drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK,
               gate_hard=None, layout="nchw", channel_block=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeltaPool over MaxPool (docs/ops.md), rules 1-5 with the pool's window as receptive field:
    returns (Y, X_ref_next, map_out); gate as in delta_conv. layout "blocked": X, X_ref, Y_prev, Y and X_ref_next
    hold blocked memory (docs/ops.md#blocked-layout) of channel_block (default: the library's)."""
    if int(storage_order) != 0:
        raise ValueError("DeltaPool refuses storage_order != 0 (it has no Indices output)")
    args = dict(kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations, auto_pad=auto_pad,
                ceil_mode=ceil_mode, threshold=threshold, dense_fraction=dense_fraction, drop_reference=drop_reference,
                gate=gate, gate_block=gate_block, gate_hard=gate_hard)
    if blocked_sides(layout, gate, conv=False)[0]:
        return run_blocked(lambda x, x_ref, y_prev: delta_pool(x, x_ref, y_prev, map_in, **args), channel_block,
                           X, X_ref, Y_prev)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"DeltaPool is 2-D NCHW: X {X.shape}")
    win = _Window.resolve(X.shape[2:], kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)

    def dense(x_ref_next):
        return maxpool2d(x_ref_next, kernel_shape=win.kernel, strides=win.strides, pads=win.pads,
                         dilations=win.dilations, ceil_mode=ceil_mode)

    return _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win, dense, drop_reference,
                       gate, gate_block, gate_hard)


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


def map_union(*maps) -> np.ndarray:
    """DeltaMapUnion: elementwise OR of change maps of one shape [N,1,H,W], as uint8 0/1."""
    if not maps:
        raise ValueError("DeltaMapUnion needs at least one map")
    arrays = [np.asarray(m) for m in maps]
    for a in arrays[1:]:
        if a.shape != arrays[0].shape:
            raise ValueError(f"DeltaMapUnion inputs differ in shape: {[x.shape for x in arrays]}")
    out = np.zeros(arrays[0].shape, dtype=bool)
    for a in arrays:
        out |= a != 0
    return out.astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# The blocked layout (docs/ops.md#blocked-layout): [N, C, H, W] arrays whose memory is [N][C/b][H][W][b]
# --------------------------------------------------------------------------------------------------

def delta_reorder(X, Y_prev=None, map_in=None, *, to: str, block: int | None = None) -> np.ndarray:
    """DeltaReorder (docs/ops.md#deltareorder): X's memory reordered to `to` ("blocked" or "nchw") with channel
    block `block` (default: the library's). With its last output Y_prev (of X's shape) and X's change map
    ([N,1,H,W]), the pixels the map leaves 0 keep Y_prev's values; an empty or other-shaped Y_prev (rule 1), an
    empty map or none: every pixel from X."""
    if to not in REORDER_TARGETS:
        raise ValueError(f"DeltaReorder's 'to' must be one of {REORDER_TARGETS}, got {to!r}")
    b = library_channel_block() if block is None else int(block)
    X = np.asarray(X, dtype=np.float32)
    nchw = X if to == "blocked" else from_blocked(X, b)  # X's values in NCHW order
    if map_in is not None and np.size(map_in) > 0:
        map_in = _check_map(map_in, (X.shape[0], 1, *X.shape[2:]), "map_in")
        if Y_prev is not None and np.shape(Y_prev) == X.shape:
            previous = np.asarray(Y_prev, np.float32)
            previous = from_blocked(previous, b) if to == "blocked" else previous
            nchw = np.where(map_in != 0, nchw, previous)
    return to_blocked(nchw, b) if to == "blocked" else np.ascontiguousarray(nchw)


# --------------------------------------------------------------------------------------------------
# onnx.reference.ReferenceEvaluator support
# --------------------------------------------------------------------------------------------------

def _reference_ops(channel_block: int | None = None):
    """The Delta ops for ReferenceEvaluator; channel_block: b of blocked tensors (default: the library's)."""
    from onnx.reference.op_run import OpRun

    class DeltaConv(OpRun):
        op_domain = DOMAIN

        def _run(self, X, W, B=None, X_ref=None, Y_prev=None, map_in=None, **attrs):
            names = list(self.onnx_node.input) + [""] * 6
            # Absent inputs are judged by name: the evaluator may hand a stale value for "".
            B = None if not names[2] or (B is not None and np.asarray(B).size == 0) else B
            dropped = not names[3]  # an absent X_ref (not an empty state): the dropped reference of docs/ops.md
            map_in = map_in if names[5] else None
            return delta_conv(X, W, B, None if dropped else X_ref, Y_prev, map_in, drop_reference=dropped,
                              channel_block=channel_block, **attrs)

    class DeltaPool(OpRun):
        op_domain = DOMAIN

        def _run(self, X, X_ref=None, Y_prev=None, map_in=None, **attrs):
            names = list(self.onnx_node.input) + [""] * 4
            dropped = not names[1]
            map_in = map_in if names[3] else None
            return delta_pool(X, None if dropped else X_ref, Y_prev, map_in, drop_reference=dropped,
                              channel_block=channel_block, **attrs)

    class DeltaMapUnion(OpRun):
        op_domain = DOMAIN

        def _run(self, *maps):
            return (map_union(*[m for m in maps if m is not None]),)

    class DeltaGate(OpRun):
        op_domain = DOMAIN

        def _run(self, X, X_ref=None, map_in=None, rule="block", threshold=0.0, gate_block=DEFAULT_GATE_BLOCK,
                 gate_hard=-1.0):
            names = list(self.onnx_node.input) + [""] * 3
            map_in = map_in if names[2] and map_in is not None and 0 not in np.shape(map_in) else None
            rule = rule.decode() if isinstance(rule, bytes) else rule
            return delta_gate(X, X_ref, map_in, rule=rule, threshold=threshold, gate_block=gate_block,
                              gate_hard=gate_hard)

    class DeltaReorder(OpRun):
        op_domain = DOMAIN

        def _run(self, X, Y_prev=None, map_in=None, to=None):
            to = to.decode() if isinstance(to, bytes) else to
            if to is None:
                raise ValueError("DeltaReorder's attribute 'to' is required")
            names = list(self.onnx_node.input) + [""] * 3
            return (delta_reorder(X, Y_prev if names[1] else None, map_in if names[2] else None, to=to,
                                  block=channel_block),)

    return [DeltaConv, DeltaPool, DeltaMapUnion, DeltaGate, DeltaReorder]


def make_reference_evaluator(model, channel_block: int | None = None, **kwargs):
    """An onnx.reference.ReferenceEvaluator that runs a converted model (a ModelProto or a path), with
    DeltaConv, DeltaPool, DeltaMapUnion, DeltaGate and DeltaReorder implemented by this module: the whole-model
    oracle of docs/design.md "Correctness oracle". Absent optional inputs (empty names, missing trailing inputs)
    reach the ops as None. channel_block: b of blocked tensors (default: the library's, read when first needed)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model, new_ops=_reference_ops(channel_block), **kwargs)
