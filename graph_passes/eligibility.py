"""Which Conv-like nodes can become Delta ops at all, and if not, why (the reason is shown to the user)."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .constants import constant_array
from .graph_edits import attribute
from .shapes import rank

_OTHER_OP_REASONS = {
    "ConvTranspose": "ConvTranspose is not supported (only Conv)",
    "AveragePool": "AveragePool has no Delta op (only MaxPool)",
    "LpPool": "LpPool has no Delta op (only MaxPool)",
    "ConvInteger": "quantized convolution is not supported",
    "QLinearConv": "quantized convolution is not supported",
    "DeformConv": "DeformConv is not supported",
}


def ineligibility(node: ir.Node) -> Optional[str]:
    """None if `node` can be converted, else the reason it cannot."""
    if node.op_type == "Conv":
        return _conv_ineligibility(node)
    if node.op_type == "MaxPool":
        return _maxpool_ineligibility(node)
    return _OTHER_OP_REASONS.get(node.op_type, f"{node.op_type} is not supported")


def _dtype_reason(x: Optional[ir.Value], fallback: Optional[ir.DataType]) -> Optional[str]:
    dtype = x.dtype if x is not None and x.dtype is not None else fallback
    if dtype is None:
        return "unknown element type (only float32)"
    if dtype != ir.DataType.FLOAT:
        return f"{dtype.name.lower()} tensors (only float32)"
    return None


def _conv_ineligibility(node: ir.Node) -> Optional[str]:
    x = node.inputs[0]
    weight_value = node.inputs[1] if len(node.inputs) > 1 else None
    weight = constant_array(weight_value)
    if weight is None:
        if weight_value is not None and weight_value.is_graph_input():
            if weight_value.is_initializer():
                return "weights are an initializer listed as a graph input (overridable), not a constant (re-export without keep_initializers_as_inputs)"
            return "weights are a graph input, not a constant"
        return "weights are not a constant"
    if weight.ndim != 4:
        return f"{weight.ndim - 2}-D convolution (only 2-D)"
    x_rank = rank(x)
    if x_rank is not None and x_rank != 4:
        return f"input of rank {x_rank} (only NCHW)"
    weight_dtype = weight_value.dtype if weight_value is not None else None
    reason = _dtype_reason(x, weight_dtype)
    if reason is not None:
        return reason
    if weight_dtype is not None and weight_dtype != ir.DataType.FLOAT:
        return f"{weight_dtype.name.lower()} weights (only float32)"
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    if bias_value is not None:
        bias = constant_array(bias_value)
        if bias is None:
            return "bias is not a constant"
        if bias.dtype.name != "float32":
            return f"{bias.dtype.name} bias (only float32)"
    group = attribute(node, "group", 1)
    if group < 1 or weight.shape[0] % group != 0:
        return f"invalid group {group}"
    return None


def _maxpool_ineligibility(node: ir.Node) -> Optional[str]:
    kernel = attribute(node, "kernel_shape")
    if kernel is None:
        return "no kernel_shape"
    if len(kernel) != 2:
        return f"{len(kernel)}-D pooling (only 2-D)"
    x = node.inputs[0]
    x_rank = rank(x)
    if x_rank is not None and x_rank != 4:
        return f"input of rank {x_rank} (only NCHW)"
    reason = _dtype_reason(x, None)
    if reason is not None:
        return reason
    if len(node.outputs) > 1 and node.outputs[1].name:
        indices = node.outputs[1]
        if indices.uses() or indices.is_graph_output():
            return "its Indices output is used"
    if attribute(node, "storage_order", 0) != 0:
        return "storage_order=1 is not supported"
    return None
