"""Fold an inference-mode BatchNormalization into the Conv that feeds it.

Conv(x, W, b) followed by BN(scale, beta, mean, var, eps) equals Conv(x, W', b') with
W' = W * s (per output channel), b' = (b - mean) * s + beta, s = scale / sqrt(var + eps).
Only when the Conv output feeds nothing else (a second reader would need the unnormalised values)."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir

from .constants import constant_array
from .normalize import onnx_opset
from .graph_edits import NameScope, add_initializer, attribute, remove_unused_constants, sole_consumer, substitute

FOLDED_META_KEY = "deltaonnx.folded"  # Conv node meta: names of the BN nodes folded into it


class FoldBatchNormIntoConv(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        scope = NameScope(graph)
        modified = False
        opset = onnx_opset(model)
        for conv in list(graph):
            if conv.domain != "" or conv.op_type != "Conv" or conv.graph is not graph:
                continue
            bn = sole_consumer(conv.outputs[0])
            if bn is None or bn.domain != "" or bn.op_type != "BatchNormalization":
                continue
            if conv.outputs[0] is not bn.inputs[0]:
                continue
            folded = _folded_parameters(conv, bn, opset)
            if folded is None:
                continue
            weight, bias = folded
            old_weight = conv.inputs[1]
            old_bias = conv.inputs[2] if len(conv.inputs) > 2 else None
            bn_parameters = list(bn.inputs[1:])
            base = conv.name or "conv"
            new_weight = add_initializer(graph, scope.take(f"deltaonnx.bn_folded.{base}.weight"), weight)
            new_bias = add_initializer(graph, scope.take(f"deltaonnx.bn_folded.{base}.bias"), bias)
            conv.replace_input_with(1, new_weight)
            if len(conv.inputs) < 3:
                conv.resize_inputs(3)
            conv.replace_input_with(2, new_bias)
            bn_output, conv_output = bn.outputs[0], conv.outputs[0]
            if bn_output.shape is not None:
                conv_output.shape = bn_output.shape
            substitute(bn_output, conv_output)
            graph.remove(bn, safe=True)
            conv.meta[FOLDED_META_KEY] = [*conv.meta.get(FOLDED_META_KEY, []), bn.name or "BatchNormalization"]
            remove_unused_constants(graph, [old_weight, old_bias, *bn_parameters])
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _folded_parameters(conv: ir.Node, bn: ir.Node, opset: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(W', b') or None when the pair cannot be folded exactly (training mode, non-constant parameters...)."""
    if len(bn.inputs) != 5 or any(v is None for v in bn.inputs):
        return None
    if attribute(bn, "training_mode", 0) != 0 or attribute(bn, "spatial", 1) != 1:
        return None
    extra_outputs = [out for out in bn.outputs[1:] if out.name]
    if extra_outputs:
        # Before opset 14 requesting the running statistics selects training mode; from 14 on
        # training_mode decides, and unread statistics outputs are harmless.
        if opset < 14 or any(out.uses() or out.is_graph_output() for out in extra_outputs):
            return None
    weight = constant_array(conv.inputs[1])
    bias_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = constant_array(bias_value) if bias_value is not None else None
    if weight is None or (bias_value is not None and bias is None) or weight.dtype.kind != "f" or weight.ndim < 3:
        return None
    params = [constant_array(v) for v in bn.inputs[1:]]
    if any(p is None for p in params):
        return None
    channels = weight.shape[0]
    scale, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    if any(p.size != channels for p in (scale, beta, mean, var)):
        return None
    epsilon = float(attribute(bn, "epsilon", 1e-5))
    factor = scale / np.sqrt(var + epsilon)
    new_weight = weight.astype(np.float64) * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    old_bias = np.zeros(channels) if bias is None else bias.astype(np.float64).reshape(-1)
    new_bias = (old_bias - mean) * factor + beta
    return new_weight.astype(weight.dtype), new_bias.astype(weight.dtype)
