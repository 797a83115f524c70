"""Fuse a YOLOv8-style DFL Softmax into the DeltaConvs whose outputs it normalises.

An Ultralytics YOLOv8 export ends its box branch with
    Y_i [N, C, H_i, W_i] -> Reshape [N, C, -1] -> Concat(axis 2) -> Reshape [N, K, G, A] -> Transpose [0, 2, 1, 3]
    -> Softmax(axis 1)
(or one Reshape [N, C, -1] without a Concat): a softmax over each group of G consecutive channels of each pixel
of each Y_i (C = K * G: 4 box sides x 16 bins). Dense, it is recomputed for every anchor on every frame; as
DeltaConv activation Softmax with activation_params [G] (docs/ops.md) only the recomputed pixels pay. The
Reshapes, the Concat and the Transpose stay; the Softmax goes (its readers read the Transpose).

Strict: every DeltaConv has no activation and C output channels, every value in the chain is read only by the
next node of the chain (another reader would need the values before the softmax), the Reshapes keep the batch
(0 or the known batch size) and have constant shapes, the Softmax is over axis 1 from opset 13. Anything else
leaves the graph as it is. Maps are unaffected: they never pass a Reshape."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .constants import constant_array, constant_ints
from .conversion_context import PLAN_META_KEY
from .delta_ops import CONV_INPUTS, DELTA_CONV, Y, is_delta_op
from .graph_edits import attribute, sole_consumer, substitute
from .normalize import onnx_opset

_SWAP_GROUPS_AND_BINS = [0, 2, 1, 3]


class FuseGroupSoftmaxIntoDeltaConv(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if onnx_opset(model) < 13:  # before 13, Softmax(axis 1) normalises the flattened dims 1.. together
            return ir.passes.PassResult(model, modified=False)
        modified = False
        for node in list(model.graph):
            if not _onnx_op(node, "Softmax") or int(attribute(node, "axis", -1)) not in (1, -3):
                continue
            match = _match_dfl_chain(node)
            if match is None:
                continue
            convs, group = match
            for conv in convs:
                conv.attributes["activation"] = ir.AttrString("activation", "Softmax")
                conv.attributes["activation_params"] = ir.AttrFloat32s("activation_params", [float(group)])
            substitute(node.outputs[0], node.inputs[0])
            model.graph.remove(node, safe=True)
            for index, conv in enumerate(convs):
                plan = conv.meta.get(PLAN_META_KEY)
                if plan is None:
                    continue
                plan.activation = "Softmax"
                if index == 0:  # one Softmax for all: listed once, so profiles count its dense cost once
                    plan.fused.append(node.name or node.op_type)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def _onnx_op(node: Optional[ir.Node], op_type: str) -> bool:
    return node is not None and node.domain == "" and node.op_type == op_type


def _read_only_by(value: ir.Value, reader: ir.Node) -> bool:
    return sole_consumer(value) is reader


def _reshape_shape(node: ir.Node) -> Optional[list[int]]:
    """The constant target shape of a Reshape that copies 0s from its input (allowzero 0), else None."""
    if len(node.inputs) != 2 or int(attribute(node, "allowzero", 0)) != 0:
        return None
    return constant_ints(node.inputs[1])


def _keeps_batch(dim: int, batch: Optional[int]) -> bool:
    """A Reshape's first target dim keeps the batch: copied (0), or the batch size it is known to have."""
    return dim == 0 or (batch is not None and dim == batch)


def _match_dfl_chain(softmax: ir.Node) -> Optional[tuple[list[ir.Node], int]]:
    """(the DeltaConvs, G) when `softmax` normalises groups of G channels of their pixels as the module says."""
    transpose = softmax.inputs[0].producer() if softmax.inputs[0] is not None else None
    if not _onnx_op(transpose, "Transpose") or list(attribute(transpose, "perm", []) or []) != _SWAP_GROUPS_AND_BINS:
        return None
    if not _read_only_by(transpose.outputs[0], softmax):
        return None
    grouped = transpose.inputs[0].producer()
    if not _onnx_op(grouped, "Reshape") or not _read_only_by(grouped.outputs[0], transpose):
        return None
    shape4 = _reshape_shape(grouped)
    if shape4 is None or len(shape4) != 4 or shape4[1] <= 0 or shape4[2] <= 0 or shape4[3] == 0:
        return None
    groups, group = shape4[1], shape4[2]
    channels = groups * group
    source = grouped.inputs[0].producer()
    if _onnx_op(source, "Concat"):
        if int(attribute(source, "axis", 0)) not in (2, -1) or not _read_only_by(source.outputs[0], grouped):
            return None
        flattened, reader = list(source.inputs), source
    else:
        flattened, reader = [grouped.inputs[0]], grouped
    if len(set(map(id, flattened))) != len(flattened):  # one value concatenated twice has two uses
        return None
    convs: list[ir.Node] = []
    batch: Optional[int] = None
    for value in flattened:
        conv = _flattened_conv(value, reader, channels)
        if conv is None:
            return None
        conv_batch = _static_batch(conv.outputs[Y])
        if batch is not None and conv_batch != batch:
            return None
        batch = conv_batch
        convs.append(conv)
    for value in flattened:
        if not _keeps_batch(_reshape_shape(value.producer())[0], batch):
            return None
    if not _keeps_batch(shape4[0], batch):
        return None
    return convs, group


def _static_batch(y: ir.Value) -> Optional[int]:
    shape = y.shape
    if shape is None or len(shape) != 4 or not isinstance(shape[0], int):
        return None
    return shape[0]


def _flattened_conv(value: Optional[ir.Value], reader: ir.Node, channels: int) -> Optional[ir.Node]:
    """The DeltaConv behind `value` = Reshape(Y, [n, channels, -1 or H*W]), when Y has no activation and
    `channels` output channels and each value is read only by the next node."""
    if value is None or not _read_only_by(value, reader):
        return None
    flatten = value.producer()
    if not _onnx_op(flatten, "Reshape"):
        return None
    shape3 = _reshape_shape(flatten)
    if shape3 is None or len(shape3) != 3 or shape3[1] != channels:
        return None
    conv = flatten.inputs[0].producer()
    if conv is None or not is_delta_op(conv) or conv.op_type != DELTA_CONV or conv.outputs[Y] is not flatten.inputs[0]:
        return None
    if not _read_only_by(conv.outputs[Y], flatten):
        return None
    if attribute(conv, "activation", "") not in ("", "None", "Identity", b"", b"None", b"Identity"):
        return None
    weight = constant_array(conv.inputs[CONV_INPUTS["w"]])
    if weight is None or weight.ndim != 4 or int(weight.shape[0]) != channels:
        return None
    y_shape = conv.outputs[Y].shape
    plane = None
    if y_shape is not None and len(y_shape) == 4 and all(isinstance(d, int) for d in y_shape[2:]):
        plane = y_shape[2] * y_shape[3]
    if shape3[2] != -1 and shape3[2] != plane:
        return None
    return conv
