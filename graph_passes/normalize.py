"""Bring any supported model (opsets 7 to the newest) into the form the other passes expect.

Each class does one thing; `normalization_passes()` lists them in order. Constants need no pass of their
own: `constants.constant_array` recognises initializers and Constant nodes alike, wherever they are."""
from __future__ import annotations

import logging
import math

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from .protocol import DOMAIN, METADATA_KEY

from .errors import ConversionError
from .graph_edits import NameScope, attribute
from .shapes import static_dims

logger = logging.getLogger(__name__)

MIN_OPSET = 7
# Ops listed in the conversion report (Conv and MaxPool convert; the others are named with a reason).
CANDIDATE_OPS = frozenset(
    {"Conv", "MaxPool", "ConvTranspose", "AveragePool", "LpPool", "ConvInteger", "QLinearConv", "DeformConv"}
)


def onnx_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))


class RejectUnsupportedModel(ir.passes.InPlacePass):
    """Refuses, with a clear message, models converted already and opsets outside 7..newest."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if METADATA_KEY in model.metadata_props:
            raise ConversionError(
                "the model is already converted by deltaonnx (it has 'deltaonnx' metadata); convert the original model"
            )
        if DOMAIN in model.opset_imports or any(node.domain == DOMAIN for node in model.graph.all_nodes()):
            raise ConversionError(f"the model already contains {DOMAIN} ops; convert the original model")
        opset = onnx_opset(model)
        newest = onnx.defs.onnx_opset_version()
        if opset == 0:
            raise ConversionError("the model imports no ai.onnx opset")
        if opset < MIN_OPSET:
            raise ConversionError(
                f"ai.onnx opset {opset} is older than {MIN_OPSET}, the oldest supported; "
                "upgrade it first with onnx.version_converter.convert_version(model, 13)"
            )
        if opset > newest:
            raise ConversionError(f"ai.onnx opset {opset} is newer than this onnx package knows ({newest}); upgrade onnx")
        return ir.passes.PassResult(model, modified=False)


class DropWeightInputs(ir.passes.InPlacePass):
    """IR version 3 lists every initializer as a graph input, yet runtimes treat them as constants.
    Make that explicit (inputs without initializers stay, in order) and move to IR 4, where an
    initializer listed as an input could be overridden and so could not be packed as a weight."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.ir_version >= 4:
            return ir.passes.PassResult(model, modified=False)
        graph = model.graph
        weights = [value for value in graph.inputs if value.is_initializer()]
        for value in weights:
            graph.inputs.remove(value)
        model.ir_version = 4
        return ir.passes.PassResult(model, modified=True)


class NameCandidateNodes(ir.passes.InPlacePass):
    """Gives unnamed or duplicate-named Conv/MaxPool-like nodes unique names, so that the report, the
    metadata and per-node thresholds can refer to them."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        scope = NameScope(model.graph)
        seen: set[str] = set()
        modified = False
        for index, node in enumerate(model.graph):
            if node.domain != "" or node.op_type not in CANDIDATE_OPS:
                continue
            if not node.name or node.name in seen:
                node.name = scope.take(f"{node.op_type}_{index}")
                modified = True
            seen.add(node.name)
        return ir.passes.PassResult(model, modified=modified)


class InferShapes(ir.passes.InPlacePass):
    """ONNX shape inference (partial results are kept: a failure leaves shapes unknown, never wrong)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        inner = ShapeInferencePass(check_type=False, strict_mode=False, data_prop=True)
        return ir.passes.PassResult(model, modified=inner(model).modified)


class CompleteConvRanks(ir.passes.InPlacePass):
    """Shape inference leaves no shape behind ops it cannot type (other domains, failures); a Conv with
    4-D weights or a MaxPool with a 2-D kernel still has a 4-D output ([N, M, H, W] for the Conv).
    Knowing the rank lets change maps pass the elementwise ops after it."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            if node.domain != "" or node.op_type not in ("Conv", "MaxPool") or node.outputs[0].shape is not None:
                continue
            if node.op_type == "Conv":
                weight_dims = static_dims(node.inputs[1]) if len(node.inputs) > 1 else None
                if weight_dims is None or len(weight_dims) != 4:
                    continue
                node.outputs[0].shape = ir.Shape([None, weight_dims[0], None, None])
            else:
                kernel = attribute(node, "kernel_shape")
                if kernel is None or len(kernel) != 2:
                    continue
                node.outputs[0].shape = ir.Shape([None, None, None, None])
            modified = True
        return ir.passes.PassResult(model, modified=modified)


class ExplicitAutoPad(ir.passes.InPlacePass):
    """Rewrites auto_pad SAME_UPPER/SAME_LOWER/VALID of Conv and MaxPool into explicit pads where the
    input's spatial size is known (VALID needs no size). Elsewhere auto_pad stays: the Delta ops support it."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            if node.domain != "" or node.op_type not in ("Conv", "MaxPool"):
                continue
            mode = attribute(node, "auto_pad", "NOTSET")
            if isinstance(mode, bytes):
                mode = mode.decode()
            if mode == "NOTSET":
                continue
            pads = explicit_pads(node, mode)
            if pads is None:
                continue
            node.attributes.pop("auto_pad")
            node.attributes["pads"] = ir.AttrInt64s("pads", pads)
            modified = True
        return ir.passes.PassResult(model, modified=modified)


def kernel_shape_of(node: ir.Node) -> list[int] | None:
    kernel = attribute(node, "kernel_shape")
    if kernel is not None:
        return list(kernel)
    if node.op_type == "Conv" and len(node.inputs) > 1:
        weight_dims = static_dims(node.inputs[1])
        if weight_dims is not None and len(weight_dims) > 2 and all(d is not None for d in weight_dims[2:]):
            return list(weight_dims[2:])
    return None


def explicit_pads(node: ir.Node, mode: str) -> list[int] | None:
    """The pads equal to auto_pad `mode` for this node, or None if they cannot be known statically."""
    kernel = kernel_shape_of(node)
    if kernel is None:
        return None
    spatial_rank = len(kernel)
    if mode == "VALID":
        return [0] * (2 * spatial_rank)
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    if node.op_type == "MaxPool" and attribute(node, "ceil_mode", 0):
        return None  # SAME output size ignores ceil_mode, explicit pads would not: keep auto_pad
    input_dims = static_dims(node.inputs[0])
    if input_dims is None or len(input_dims) != spatial_rank + 2:
        return None
    sizes = input_dims[2:]
    if any(size is None for size in sizes):
        return None
    strides = list(attribute(node, "strides", [1] * spatial_rank))
    dilations = list(attribute(node, "dilations", [1] * spatial_rank))
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin, end = (small, large) if mode == "SAME_UPPER" else (large, small)
        begins.append(begin)
        ends.append(end)
    return begins + ends


def normalization_passes() -> list[ir.passes.PassBase]:
    return [
        RejectUnsupportedModel(),
        DropWeightInputs(),
        NameCandidateNodes(),
        InferShapes(),
        CompleteConvRanks(),
        ExplicitAutoPad(),
    ]
