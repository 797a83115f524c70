"""Padded channel blocks (docs/ops.md#blocked-layout): a blocked tensor of C channels, C not a multiple of 16, holds
roundup(C, b) channels whose pad lanes (C..) are exactly zero, an invariant every writer keeps and readers rely on.
This module says which computations keep it: f(0) = 0 for a DeltaConv's fused activation and for the
layout-neutral ops a padded region passes through (no scalar added, no division by a region tensor)."""
from __future__ import annotations

import math
from typing import Optional

import onnx_ir as ir

from .constants import constant_scalar
from .fuse_activation import clip_bounds
from .graph_edits import attribute

# Channel counts that are multiples of this never pad: every b a library may pick (16, 8, 4, 1) divides it.
CHANNEL_MULTIPLE = 16

# A value's logical channel count C when it is a padded blocked tensor (value.meta, set by the layout pass): its
# channel dim is declared padded_dim(C), its state entries carry "channels".
PADDED_CHANNELS_META_KEY = "deltaonnx.padded_channels"

# A DeltaConv's fused activations (docs/ops.md#activations) with act(0) = 0 whatever their parameters.
_ACTIVATIONS_KEEPING_ZERO = frozenset({"", "None", "Identity", "Relu", "LeakyRelu", "Tanh", "HardSwish", "PRelu",
                                       "SiLU"})
# ONNX elementwise ops of one tensor with f(+-0) = +-0 whatever their attributes.
_UNARY_KEEPING_ZERO = frozenset(
    {
        "Relu", "LeakyRelu", "Tanh", "HardSwish", "Elu", "Selu", "Celu", "Softsign", "Gelu", "Mish", "Erf", "Abs",
        "Neg", "Sqrt", "Floor", "Ceil", "Round", "Sign", "Identity", "ThresholdedRelu",
    }
)  # fmt: skip
# Ops of several tensors of one shape with f(0, ..., 0) = 0 (Sub: 0 - 0; Mean: 0 / n).
_COMBINING_KEEPING_ZERO = frozenset({"Add", "Sub", "Max", "Min", "Sum", "Mean", "Mul"})


def is_padded(channels: Optional[int]) -> bool:
    """True when a blocked tensor of `channels` logical channels holds pad lanes under some library block."""
    return channels is None or channels % CHANNEL_MULTIPLE != 0


def padded_dim(channels: int) -> str:
    """The symbolic channel dim of a padded blocked tensor of `channels` logical channels (it holds
    roundup(channels, b), b the library's)."""
    return f"deltaonnx_padded_{channels}"


def activation_keeps_zero(name: str, params: list[float]) -> bool:
    """act(0) = 0 for a DeltaConv's `activation` with `activation_params`: the op refuses a padded blocked output
    otherwise (Sigmoid, HardSigmoid with beta > 0, Clip with 0 outside its bounds, channel Softmax, ...)."""
    if name in _ACTIVATIONS_KEEPING_ZERO:
        return True
    if name == "Clip":
        low, high = (list(params) + [-math.inf, math.inf][len(params):])[:2]
        return low <= 0.0 <= high
    if name == "HardSigmoid":  # clamp(alpha * 0 + beta, 0, 1)
        return len(params) == 2 and params[1] <= 0.0
    return False


def neutral_op_keeps_zero(node: ir.Node, opset: int) -> bool:
    """True when the layout-neutral `node` (its region inputs padded) computes zero on zero pad lanes, so its
    output is a padded tensor too. Scalar constants are allowed only where they cannot move 0: Mul by a finite
    one, Div by a finite non-zero one, Max with one <= 0, Min with one >= 0, Clip/Shrink bounds around 0."""
    op = node.op_type
    if op in _UNARY_KEEPING_ZERO:
        return True
    if op == "Clip":
        bounds = clip_bounds(node, opset)
        return bounds is not None and bounds[0] <= 0.0 <= bounds[1]
    if op == "Shrink":  # 0 when -lambd <= 0 <= lambd, else 0 + bias
        return float(attribute(node, "lambd", 0.5)) >= 0.0 or float(attribute(node, "bias", 0.0)) == 0.0
    if op not in _COMBINING_KEEPING_ZERO and op != "Div":
        return False
    found = [constant_scalar(v) for v in node.inputs if v is not None]
    constants = [s for s in found if s is not None]
    if not constants:
        return op != "Div"  # Div by a region tensor: 0 / 0
    if op == "Mul":
        return all(math.isfinite(s) for s in constants)
    if op == "Div":  # the region tensor divided by a scalar
        return found[0] is None and all(math.isfinite(s) and s != 0.0 for s in constants)
    if op == "Max":
        return all(s <= 0.0 for s in constants)
    if op == "Min":
        return all(s >= 0.0 for s in constants)
    return False  # a scalar added or subtracted

