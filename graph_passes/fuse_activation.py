"""Fuse the activation that follows a DeltaConv into its `activation` attribute.

Recognised (docs/ops.md names): Relu, LeakyRelu, Clip/Relu6 (bounds from attributes before opset 11,
constant inputs after), Sigmoid, Tanh, HardSigmoid, HardSwish (the op, x*HardSigmoid(x) with alpha 1/6
and beta 1/2, or x*Clip(x+3,0,6)/6 with the division as Div by 6 or Mul by 1/6, before or after the
product), PRelu with a constant slope (one, or one per output channel), SiLU as x*Sigmoid(x) (or the
Swish op with alpha 1), and a Softmax over the channels of each pixel: on the conv output (opset 13+,
axis 1), or on its channels-last Transpose (axis 3, any opset; the Transpose stays, now after the fused op),
as classifier and detector heads of fully convolutional nets end. Every intermediate must be read only
inside the pattern: another reader would need the value before the activation."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import onnx_ir as ir

from .constants import constant_array, constant_scalar
from .conversion_context import PLAN_META_KEY
from .delta_ops import CONV_INPUTS, DELTA_CONV, Y, is_delta_op
from .graph_edits import attribute, consumers_are, remove_unused_constants, sole_consumer, substitute
from .normalize import onnx_opset

_FLOAT_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass
class ActivationMatch:
    name: str  # the `activation` attribute value
    params: list[float]  # `activation_params` (empty: the op's defaults / none)
    nodes: list[ir.Node]  # the nodes the fusion removes
    output: ir.Value  # the value the fused op's Y replaces
    replacement: Optional[ir.Value] = None  # what takes `output`'s place when not Y (a Transpose kept after Y)


class FuseActivationIntoDeltaConv(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = onnx_opset(model)
        modified = False
        for node in list(graph):
            if not is_delta_op(node) or node.op_type != DELTA_CONV:
                continue
            weight = constant_array(node.inputs[CONV_INPUTS["w"]])
            match = match_activation(node.outputs[Y], opset, int(weight.shape[0]))
            if match is None:
                continue
            node.attributes["activation"] = ir.AttrString("activation", match.name)
            if match.params:
                node.attributes["activation_params"] = ir.AttrFloat32s("activation_params", match.params)
            y = node.outputs[Y]
            substitute(match.output, match.replacement if match.replacement is not None else y)
            parameters = [v for n in match.nodes for v in n.inputs if v is not None and v is not y]
            graph.remove(match.nodes, safe=True)
            remove_unused_constants(graph, parameters)
            plan = node.meta.get(PLAN_META_KEY)
            if plan is not None:
                plan.activation = match.name
                plan.fused.extend(n.name or n.op_type for n in match.nodes)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def match_activation(y: ir.Value, opset: int, channels: int) -> Optional[ActivationMatch]:
    """The activation applied to `y` (the conv output), if it is one of the fusable patterns."""
    if y.is_graph_output():
        return None
    for matcher in _MULTI_NODE_PATTERNS:
        found = matcher(y, opset)
        if found is not None:
            return found
    reader = sole_consumer(y)
    if reader is None or reader.domain != "" or reader.inputs[0] is not y:
        return None
    simple = _SIMPLE.get(reader.op_type)
    if simple is None:
        return None
    result = simple(reader, opset, channels)
    if result is None:
        return None
    name, params = result
    return ActivationMatch(name, params, [reader], reader.outputs[0])


# --- one-node activations ----------------------------------------------------------------------------


def _no_params(name: str) -> Callable:
    return lambda node, opset, channels: (name, [])


def _leaky_relu(node: ir.Node, opset: int, channels: int):
    return "LeakyRelu", [float(attribute(node, "alpha", 0.01))]


def _hard_sigmoid(node: ir.Node, opset: int, channels: int):
    return "HardSigmoid", [float(attribute(node, "alpha", 0.2)), float(attribute(node, "beta", 0.5))]


def _swish(node: ir.Node, opset: int, channels: int):
    return ("SiLU", []) if math.isclose(float(attribute(node, "alpha", 1.0)), 1.0) else None


def clip_bounds(node: ir.Node, opset: int) -> Optional[tuple[float, float]]:
    """(min, max) of a Clip with constant bounds (absent bounds are +-FLT_MAX), else None."""
    if opset < 11:
        return float(attribute(node, "min", -_FLOAT_MAX)), float(attribute(node, "max", _FLOAT_MAX))
    bounds = []
    for index, default in ((1, -_FLOAT_MAX), (2, _FLOAT_MAX)):
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is None:
            bounds.append(default)
            continue
        bound = constant_scalar(value)
        if bound is None:
            return None
        bounds.append(bound)
    return bounds[0], bounds[1]


def _clip(node: ir.Node, opset: int, channels: int):
    bounds = clip_bounds(node, opset)
    if bounds is None or not bounds[0] <= bounds[1]:
        return None  # min > max means "everything is max" in ONNX: leave such a Clip alone
    return "Clip", [bounds[0], bounds[1]]


def _prelu(node: ir.Node, opset: int, channels: int):
    slope = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if slope is None or slope.ndim > 4 or slope.dtype.kind != "f":
        return None
    if slope.size == 1:
        return "PRelu", [float(slope.reshape(-1)[0])]
    aligned = (1,) * (4 - slope.ndim) + slope.shape  # PRelu broadcasts slope onto [N, M, H, W]
    if aligned[0] == 1 and aligned[2] == 1 and aligned[3] == 1 and aligned[1] == channels:
        return "PRelu", [float(v) for v in slope.reshape(-1)]
    return None


_SIMPLE: dict[str, Callable] = {
    "Relu": _no_params("Relu"),
    "Sigmoid": _no_params("Sigmoid"),
    "Tanh": _no_params("Tanh"),
    "HardSwish": _no_params("HardSwish"),
    "LeakyRelu": _leaky_relu,
    "HardSigmoid": _hard_sigmoid,
    "Clip": _clip,
    "PRelu": _prelu,
    "Swish": _swish,
}


# --- patterns of several nodes: y * f(y) ----------------------------------------------------------------


def _readers(value: ir.Value) -> list[ir.Node]:
    found: list[ir.Node] = []
    for use in value.uses():
        if use.node not in found:
            found.append(use.node)
    return found


def _onnx_op(node: Optional[ir.Node], *op_types: str) -> bool:
    return node is not None and node.domain == "" and node.op_type in op_types


def _other_operand(node: ir.Node, value: ir.Value) -> Optional[ir.Value]:
    """The other input of a binary node one of whose inputs is `value`."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is value:
        return b
    if b is value:
        return a
    return None


def _is_close(value: Optional[float], expected: float) -> bool:
    return value is not None and math.isclose(value, expected, rel_tol=1e-5, abs_tol=1e-7)


def _product_with(y: ir.Value, gate: ir.Node) -> Optional[ir.Node]:
    """The Mul(y, gate(y)) node, when y is read exactly by `gate` and that Mul."""
    readers = _readers(y)
    if len(readers) != 2 or gate not in readers:
        return None
    product = readers[0] if readers[1] is gate else readers[1]
    if not _onnx_op(product, "Mul") or _other_operand(product, y) is not gate.outputs[0]:
        return None
    if not consumers_are(gate.outputs[0], {product}):
        return None
    return product


def _silu(y: ir.Value, opset: int) -> Optional[ActivationMatch]:
    for gate in _readers(y):
        if _onnx_op(gate, "Sigmoid") and gate.inputs[0] is y:
            product = _product_with(y, gate)
            if product is not None:
                return ActivationMatch("SiLU", [], [gate, product], product.outputs[0])
    return None


def _hard_swish_from_hard_sigmoid(y: ir.Value, opset: int) -> Optional[ActivationMatch]:
    for gate in _readers(y):
        if _onnx_op(gate, "HardSigmoid") and gate.inputs[0] is y:
            alpha, beta = float(attribute(gate, "alpha", 0.2)), float(attribute(gate, "beta", 0.5))
            if not (_is_close(alpha, 1.0 / 6.0) and _is_close(beta, 0.5)):
                continue
            product = _product_with(y, gate)
            if product is not None:
                return ActivationMatch("HardSwish", [], [gate, product], product.outputs[0])
    return None


def _divides_by_six(node: Optional[ir.Node], value: ir.Value) -> bool:
    """node computes value / 6 (Div by 6, or Mul by 1/6)."""
    if _onnx_op(node, "Div"):
        return node.inputs[0] is value and _is_close(constant_scalar(node.inputs[1]), 6.0)
    if _onnx_op(node, "Mul"):
        other = _other_operand(node, value)
        return other is not None and other is not value and _is_close(constant_scalar(other), 1.0 / 6.0)
    return False


def _hard_swish_from_clip(y: ir.Value, opset: int) -> Optional[ActivationMatch]:
    """x * Clip(x + 3, 0, 6) / 6, with the /6 after the product or on the Clip."""
    readers = _readers(y)
    if len(readers) != 2:
        return None
    for add in readers:
        if not _onnx_op(add, "Add") or not _is_close(constant_scalar(_other_operand(add, y)), 3.0):
            continue
        clip = sole_consumer(add.outputs[0])
        if not _onnx_op(clip, "Clip") or clip.inputs[0] is not add.outputs[0]:
            continue
        bounds = clip_bounds(clip, opset)
        if bounds is None or not (_is_close(bounds[0], 0.0) and _is_close(bounds[1], 6.0)):
            continue
        product = readers[0] if readers[1] is add else readers[1]
        if not _onnx_op(product, "Mul"):
            continue
        gated = _other_operand(product, y)
        if gated is clip.outputs[0]:  # (x * clip) / 6
            scale = sole_consumer(product.outputs[0])
            if not consumers_are(clip.outputs[0], {product}) or not _divides_by_six(scale, product.outputs[0]):
                continue
            nodes = [add, clip, product, scale]
            return ActivationMatch("HardSwish", [], nodes, scale.outputs[0])
        scale = sole_consumer(clip.outputs[0])  # x * (clip / 6)
        if scale is not None and gated is scale.outputs[0] and _divides_by_six(scale, clip.outputs[0]):
            if consumers_are(scale.outputs[0], {product}):
                return ActivationMatch("HardSwish", [], [add, clip, scale, product], product.outputs[0])
    return None


# --- a Softmax over the channels of each pixel --------------------------------------------------------------

_NCHW_TO_NHWC = [0, 2, 3, 1]


def _softmax_axis(node: ir.Node, opset: int) -> int:
    return int(attribute(node, "axis", 1 if opset < 13 else -1))


def _channel_softmax(y: ir.Value, opset: int) -> Optional[ActivationMatch]:
    """Softmax(y, axis=1) from opset 13 (before, axis 1 would normalise over C*H*W together), or
    Softmax(Transpose(y, [0,2,3,1]), axis=3 or -1), in any opset: the last axis alone is the channel axis."""
    reader = sole_consumer(y)
    if not _onnx_op(reader, "Softmax", "Transpose") or reader.inputs[0] is not y:
        return None
    if reader.op_type == "Softmax":
        if opset >= 13 and _softmax_axis(reader, opset) in (1, -3):
            return ActivationMatch("Softmax", [], [reader], reader.outputs[0])
        return None
    transpose = reader
    if list(attribute(transpose, "perm", []) or []) != _NCHW_TO_NHWC:
        return None
    softmax = sole_consumer(transpose.outputs[0])
    if not _onnx_op(softmax, "Softmax") or _softmax_axis(softmax, opset) not in (3, -1):
        return None
    return ActivationMatch("Softmax", [], [softmax], softmax.outputs[0], replacement=transpose.outputs[0])


_MULTI_NODE_PATTERNS = (_silu, _hard_swish_from_hard_sigmoid, _hard_swish_from_clip, _channel_softmax)
