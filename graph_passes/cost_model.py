"""How much work a node does, and whether change detection can pay for itself.

Change detection reads the input and the reference, 2*C*H*W floats; a recomputed output pixel costs its
share of 2*M*(C/g)*kH*kW*Ho*Wo FLOPs. When a conv does little arithmetic per element it reads
(depthwise 3x3: 9; a 1x1 conv with M outputs: M), detecting changes costs about as much as recomputing,
so it stays dense -- unless a change map arrives from the op before it: then detection only looks at
marked pixels and is nearly free."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .constants import constant_array
from .graph_edits import attribute
from .shapes import static_dims

# Below this many FLOPs per element read by detection, a conv without an incoming map stays dense.
MIN_FLOPS_PER_ELEMENT_READ = 32.0


def _weight_shape(node: ir.Node) -> Optional[list[int]]:
    if len(node.inputs) < 2:
        return None
    found = static_dims(node.inputs[1])
    if found is not None and all(d is not None for d in found):
        return list(found)
    weight = constant_array(node.inputs[1])
    return None if weight is None else list(weight.shape)


def _known(values: list[Optional[int]]) -> bool:
    return all(v is not None for v in values)


def conv_flops(node: ir.Node) -> Optional[int]:
    """Multiply-adds x2 of a Conv (or ConvTranspose) per batch item; None where shapes are unknown."""
    weight = _weight_shape(node)
    if weight is None or len(weight) < 3:
        return None
    kernel_size = 1
    for k in weight[2:]:
        kernel_size *= k
    if node.op_type == "ConvTranspose":
        # W is [C, M/g, k...]: every input pixel scatters into M/g * k outputs.
        x = static_dims(node.inputs[0])
        if x is None or not _known(x[1:]):
            return None
        spatial = 1
        for d in x[2:]:
            spatial *= d
        return 2 * x[1] * weight[1] * kernel_size * spatial
    y = static_dims(node.outputs[0])
    if y is None or len(y) != len(weight) or not _known(y[2:]):
        return None
    spatial = 1
    for d in y[2:]:
        spatial *= d
    return 2 * weight[0] * weight[1] * kernel_size * spatial


def pool_comparisons_per_output_pixel(node: ir.Node) -> Optional[int]:
    """C*kH*kW for a pooling node whose channels are known, whatever its input size."""
    kernel = attribute(node, "kernel_shape")
    y = static_dims(node.outputs[0])
    if kernel is None or y is None or len(y) != len(kernel) + 2 or y[1] is None:
        return None
    total = y[1]
    for k in kernel:
        total *= k
    return total


def pool_flops(node: ir.Node) -> Optional[int]:
    """Comparisons of a pooling node per batch item."""
    total = pool_comparisons_per_output_pixel(node)
    y = static_dims(node.outputs[0])
    if total is None or not _known(y[2:]):
        return None
    for d in y[2:]:
        total *= d
    return total


def node_flops(node: ir.Node) -> Optional[int]:
    if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv"):
        if node.op_type == "QLinearConv":
            return None  # its weight is input 3
        return conv_flops(node)
    return pool_flops(node)


def flops_per_output_pixel(node: ir.Node) -> Optional[int]:
    """A node's FLOPs per output pixel (all output channels), known whatever the input size: 2*M*C/g*kH*kW for
    a Conv, C*kH*kW comparisons for a MaxPool (its channels must be known)."""
    if node.op_type == "MaxPool":
        return pool_comparisons_per_output_pixel(node)
    if node.op_type != "Conv":
        return None
    weight = _weight_shape(node)
    if weight is None or len(weight) != 4 or not _known(weight):
        return None
    return 2 * weight[0] * weight[1] * weight[2] * weight[3]


def flops_per_element_read(node: ir.Node) -> Optional[float]:
    """A Conv's FLOPs per element that change detection reads (its input and reference, 2*C*H*W)."""
    weight = _weight_shape(node)
    if weight is None or len(weight) != 4:
        return None
    group = attribute(node, "group", 1)
    channels = weight[1] * group
    flops = conv_flops(node)
    x = static_dims(node.inputs[0])
    if flops is not None and x is not None and len(x) == 4 and _known(x[2:]) and x[2] * x[3] > 0:
        return flops / (2.0 * channels * x[2] * x[3])
    # Unknown spatial size: output pixels per input pixel is about 1 / (stride_h * stride_w).
    strides = list(attribute(node, "strides", [1, 1]))
    per_output_pixel = 2.0 * weight[0] * weight[1] * weight[2] * weight[3]
    return per_output_pixel / (2.0 * channels * strides[0] * strides[1])


def pays_for_detection(node: ir.Node) -> tuple[bool, Optional[float]]:
    intensity = flops_per_element_read(node)
    if intensity is None:
        return True, None
    return intensity >= MIN_FLOPS_PER_ELEMENT_READ, intensity
