"""The dense ops the Delta ops recompute: conv, max-pool, the change-map OR-pool and the fused activations."""
from __future__ import annotations

import numpy as np

from .window import _Window

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
