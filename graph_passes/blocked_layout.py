"""Put the Delta ops in channel-blocked regions (docs/decisions/nchwc-exchange.md, docs/ops.md#blocked-layout).

A DeltaConv (a DeltaPool) gets `layout = "blocked"`: its X, Y and state hold the memory [N][Cb/b][H][W][b] under
their 4-D shapes, Cb = roundup(C, b). A channel count C that is not a multiple of 16 (hence of every block b a
library picks: 16, 8, 4 or 1) is padded: channels C..Cb-1 are zero lanes (graph_passes/pad_lanes.py), so a tensor's
channel dim depends on the library and is declared symbolic (DeclarePaddedShapes). Counts of 16 or more are
padded (except a padded output whose fused activation has act(0) != 0); a count below 16 stays NCHW (padding 8
channels to 16 doubles the op's work: ORT's NCHWc transformer reads such inputs NCHW; it pads such outputs, which
measured slower here, docs/ops.md#convert-blocked). Its
Y stays blocked through the ops that compute the same thing on blocked memory (layout-neutral: elementwise ops of
region tensors of one shape or with scalar constants, keeping pad lanes zero where the tensor is padded;
Concat/Split along channels with parts that are multiples of 16; a nearest Resize by integer factors, which becomes a
DeltaResize: blocked_resize.py), and a squeeze-excite block's global average pool and per-channel scale read its
tensor as it lies (DeltaGlobalAveragePool, DeltaChannelScale: blocked_squeeze_excite.py); everything else reads NCHW through a
DeltaReorder(to = "nchw") inserted once per tensor, and a blocked DeltaConv whose input is NCHW reads it through a
DeltaReorder(to = "blocked"); reorders of padded tensors carry `channels`. A DeltaConv whose input is not
blockable (a backbone's first conv, on 3 channels, or one reading a model input) gets `layout = "blocked_out"`: it
reads NCHW and writes the region's memory itself. Model outputs are always NCHW. The pass runs before the state
pass, so a Delta op's state follows its layout and the model's outputs are still the graph's only outputs.

Decided forward in graph order (the graph is topologically sorted by the normalisation): a neutral op is in the
region when it reads a blocked tensor; the NCHW tensors it also reads (the upsampled half of a neck's Concat) are
reordered to blocked, so the region goes on."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .blocked_resize import nearest_factors, replace_with_delta_resize
from .blocked_squeeze_excite import (SCALE_S, channel_scale_operands, reads_for_pool, replace_pool,
                                     replace_scale)
from .constants import constant_array, constant_scalar
from .conversion_context import PLAN_META_KEY, ConversionContext
from .delta_ops import (CONV_INPUTS, DELTA_CHANNEL_SCALE, DELTA_GLOBAL_POOL, DELTA_POOL, DELTA_REORDER, LAYOUT_BLOCKED,
                        LAYOUT_BLOCKED_OUT, POOL_INPUTS, X_REF_NEXT, Y, is_delta_op, sum_input)
from .graph_edits import NameScope, attribute, copy_type_and_shape, numbered_name
from .normalize import onnx_opset
from .pad_lanes import (CHANNEL_MULTIPLE, PADDED_CHANNELS_META_KEY, activation_keeps_zero, is_padded,
                        neutral_op_keeps_zero, padded_dim)
from .plan import reads_model_input
from .protocol import DOMAIN
from .shapes import dims, dims_provably_equal, static_dims

# Elementwise ops of one tensor with one output (the other inputs, if any, must be scalar constants, e.g. Clip's
# bounds). Not Dropout: its optional mask output is boolean.
_UNARY_OPS = frozenset(
    {
        "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Softplus",
        "Softsign", "Gelu", "Mish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil",
        "Round", "Sign", "Identity", "Clip", "ThresholdedRelu", "Shrink",
    }
)  # fmt: skip
# Elementwise ops of several tensors: neutral when every input is a region tensor of the output's shape or a
# scalar constant (broadcasting a per-channel constant over blocked memory would not be).
_ELEMENTWISE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"})


def can_block(node: ir.Node, output_only: bool = False) -> Optional[str]:
    """None when this DeltaConv or DeltaPool can take layout "blocked" (with `output_only`: a DeltaConv layout
    "blocked_out", its input staying NCHW), else why not (what the op's definition refuses,
    docs/ops.md#blocked-layout, or a channel count that padding would not pay for)."""
    if attribute(node, "gate", "pixel") == "block":
        return "block gate"
    if output_only and node.op_type == DELTA_POOL:
        return "a pool blocks both sides"
    if not output_only and reads_model_input(node):  # the input gate and the identical-frame plan read the frame in NCHW
        return "reads a model input"
    if node.op_type == DELTA_POOL:
        channels = _channels(node.inputs[POOL_INPUTS["x"]])
        if channels is None:
            return "channels unknown"
        return _too_few_to_pad(channels)
    activation = attribute(node, "activation", "")
    if activation == "Softmax":
        return "channel Softmax"
    weights = constant_array(node.inputs[CONV_INPUTS["w"]])
    if weights is None or weights.ndim != 4:
        return "weights not constant"
    group = attribute(node, "group", 1) or 1
    # "blocked" takes a depthwise conv (group = C = M, W [M, 1, kH, kW]); "blocked_out" group 1 only
    if group != 1 and (output_only or not (weights.shape[1] == 1 and weights.shape[0] == group)):
        return "grouped convolution"
    x_dims = dims(node.inputs[CONV_INPUTS["x"]])
    if x_dims is None or len(x_dims) != 4:
        return "input not 4-D"
    out_channels, in_channels = int(weights.shape[0]), int(weights.shape[1]) * group
    if is_padded(out_channels) and not activation_keeps_zero(activation, list(attribute(node, "activation_params", []))):
        return f"output channels {out_channels} padded, {activation}(0) != 0"
    return _too_few_to_pad(out_channels, "output") or (None if output_only else _too_few_to_pad(in_channels))


def _too_few_to_pad(channels: int, side: str = "input") -> Optional[str]:
    """Why `channels` stay NCHW: fewer than 16 padded to a block of 16 would at least double the op's reads and
    work. ORT's NCHWc transformer reads such inputs NCHW too; it pads such outputs, but measured end to end
    (unet_like's and yolov8_like's 8-channel convs, their 6- and 2-channel heads: docs/results.md#padded-conversion)
    the NCHW op without the reorders around it is faster."""
    if is_padded(channels) and channels < CHANNEL_MULTIPLE:
        return f"{side} channels {channels} fewer than {CHANNEL_MULTIPLE}"
    return None


def _channels(value: Optional[ir.Value]) -> Optional[int]:
    """The channel count of a 4-D tensor, when known."""
    found = static_dims(value)
    return found[1] if found is not None and len(found) == 4 else None


def _multiple_channels(value: Optional[ir.Value]) -> bool:
    """A 4-D tensor whose channel count is known and a multiple of CHANNEL_MULTIPLE (never padded)."""
    channels = _channels(value)
    return channels is not None and not is_padded(channels)


def _channel_axis(node: ir.Node, default: int) -> Optional[int]:
    axis = attribute(node, "axis", default)
    return axis + 4 if isinstance(axis, int) and axis < 0 else axis


class ChooseBlockedLayout(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.context.options.layout != LAYOUT_BLOCKED:
            return ir.passes.PassResult(model, modified=False)
        graph = model.graph
        opset = onnx_opset(model)
        # values whose memory is blocked -> their logical channel count, in graph order (names are deterministic)
        blocked: dict[ir.Value, int] = {}
        chosen: list[ir.Node] = []  # the Delta ops made blocked
        entering: list[ir.Node] = []  # the DeltaConvs made blocked_out: NCHW input, their output opens a region
        neutral: set[ir.Node] = set()  # the layout-neutral ops inside a region
        pools: list[ir.Node] = []  # GlobalAveragePools of a region tensor (blocked_squeeze_excite.py)
        scales: list[ir.Node] = []  # per-channel Muls of a region tensor by a gate [N or 1, C, 1, 1]
        for node in graph:
            if is_delta_op(node):
                why = can_block(node)
                layout = LAYOUT_BLOCKED if why is None else f"nchw ({why})"
                if why is None and self._reads_nchw_padded(node, blocked) and can_block(node, output_only=True) is None:
                    why = "padded input read NCHW"  # blocked_out reads it as it is, no reorder in
                if why is None:
                    chosen.append(node)
                    blocked[node.outputs[Y]] = _output_channels(node)
                elif can_block(node, output_only=True) is None:
                    # the first conv of a backbone (3 input channels, or reading the frame): it writes the region's
                    # memory itself instead of a DeltaReorder after it (docs/ops.md#blocked-layout)
                    entering.append(node)
                    blocked[node.outputs[Y]] = _output_channels(node)
                    layout = LAYOUT_BLOCKED_OUT
                plan = node.meta.get(PLAN_META_KEY)
                if plan is not None:
                    plan.layout = layout
            else:
                channels = self._neutral(node, blocked, opset)
                if channels is None and node.inputs and node.inputs[0] in blocked and nearest_factors(node, opset):
                    channels = blocked[node.inputs[0]]  # a nearest upsample: a DeltaResize (blocked_resize.py)
                if channels is not None:
                    neutral.add(node)
                    blocked.update(dict.fromkeys(node.outputs, channels))
                elif (operands := channel_scale_operands(node, blocked)) is not None:
                    scales.append(node)
                    blocked[node.outputs[0]] = blocked[operands[0]]
                elif reads_for_pool(node, blocked):
                    pools.append(node)
        if not chosen and not entering:
            return ir.passes.PassResult(model, modified=False)
        self._leave_trailing_mixed(graph, neutral, set(chosen) | set(scales) | set(pools), set(entering), blocked)
        entering = self._one_pixel_outputs_stay_nchw(entering, neutral, set(chosen), blocked)
        if not chosen and not entering:
            return ir.passes.PassResult(model, modified=False)
        scope = NameScope(graph)
        # the squeeze-excite readers, on the final region (a scale's gate S is read NCHW: not a region read)
        for node in pools:
            x = node.inputs[0]
            if x in blocked:
                neutral.add(replace_pool(graph, scope, node, blocked[x]))
        region_readers = set(chosen) | neutral | set(pools) | set(scales)
        for node in scales:
            operands = channel_scale_operands(node, blocked)
            y = node.outputs[0]
            read_inside = any(use.node in region_readers or (use.node in entering and use.idx in _sum_positions(use.node))
                              for use in y.uses())
            if operands is None or not read_inside:
                # its X left the region, or its output only leaves it (a model output): the Mul reads the NCHW
                # copy a reorder makes anyway, rather than a scale here and a reorder after it
                blocked.pop(y, None)
                continue
            scale = replace_scale(graph, scope, node, *operands)
            blocked[scale.outputs[0]] = blocked.pop(y)
            neutral.add(scale)
        for node in [n for n in graph if n in neutral and n.op_type == "Resize"]:
            resize = replace_with_delta_resize(graph, scope, node, nearest_factors(node, opset))
            neutral.discard(node)
            neutral.add(resize)
            blocked[resize.outputs[0]] = blocked.pop(node.outputs[0])
        for node in chosen:
            node.attributes["layout"] = ir.AttrString("layout", LAYOUT_BLOCKED)
            channels = _input_channels(node)
            if is_padded(channels):  # its X_ref is X's copy: blocked and padded like X
                node.outputs[X_REF_NEXT].meta[PADDED_CHANNELS_META_KEY] = channels
        for node in entering:
            node.attributes["layout"] = ir.AttrString("layout", LAYOUT_BLOCKED_OUT)
        # A blocked_out conv reads NCHW: it is outside the region for its input (a blocked one is reordered back),
        # inside for its sum Z, which is in Y's layout (padded like Y).
        self._reorder_inputs(graph, scope, [n for n in graph if n in neutral or n in chosen or n in entering], blocked,
                             set(entering))
        self._reorder_outputs(graph, scope, blocked, set(chosen) | neutral, set(entering))
        for value, channels in blocked.items():
            if is_padded(channels):
                value.meta[PADDED_CHANNELS_META_KEY] = channels
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _reads_nchw_padded(node: ir.Node, blocked: dict[ir.Value, int]) -> bool:
        """A DeltaConv whose input is NCHW (a Concat of parts that are not multiples of 16) and of a padded channel
        count: as blocked_out it reads it as it is, where blocked would read it through a DeltaReorder."""
        return (node.op_type != DELTA_POOL and node.inputs[CONV_INPUTS["x"]] not in blocked
                and is_padded(_input_channels(node)))

    @staticmethod
    def _neutral(node: ir.Node, blocked: dict[ir.Value, int], opset: int) -> Optional[int]:
        """The channel count of `node`'s output when it reads at least one blocked tensor and computes the same on
        blocked memory (keeping pad lanes zero where its inputs are padded), else None; the tensors it reads that
        are not blocked (4-D, of the output's shape) are then read through a reorder."""
        if node.domain not in ("", "ai.onnx"):
            return None
        inputs = [v for v in node.inputs if v is not None]
        if not any(v in blocked for v in inputs):
            return None
        op, out = node.op_type, node.outputs
        if op in _UNARY_OPS:
            if node.inputs[0] not in blocked or not all(constant_scalar(v) is not None for v in inputs[1:]):
                return None
            channels = blocked[node.inputs[0]]
        elif op in _ELEMENTWISE_OPS:
            out_dims, channels = dims(out[0]), _channels(out[0])
            if out_dims is None or len(out_dims) != 4 or channels is None:
                return None
            for value in inputs:
                if constant_scalar(value) is not None:
                    continue
                found = dims(value)
                if found is None or len(found) != 4 or not all(map(dims_provably_equal, found, out_dims)):
                    return None
        elif op == "Concat":
            if _channel_axis(node, None) != 1 or not all(_multiple_channels(v) for v in inputs + list(out)):
                return None
            channels = _channels(out[0])
        elif op == "Split":
            if node.inputs[0] not in blocked or _channel_axis(node, 0) != 1 or not all(map(_multiple_channels, out)):
                return None
            channels = _channels(out[0])
        else:
            return None
        if is_padded(channels) and not neutral_op_keeps_zero(node, opset):
            return None
        return channels

    @staticmethod
    def _leave_trailing_mixed(graph: ir.Graph, neutral: set[ir.Node], chosen: set[ir.Node], entering: set[ir.Node],
                              blocked: dict[ir.Value, int]) -> None:
        """A neutral op that reads an NCHW tensor and whose output only leaves the region (a residual Add before a
        Concat whose parts are not multiples of 16) would cost a reorder in and one out: it stays NCHW, reading its
        blocked operand through one reorder instead. So does an upsampling Resize whose output only leaves: the
        reorder before it moves a fraction of the pixels one after it would. Backwards, so a chain of them leaves
        together. A blocked_out conv's sum Z is in the region."""
        for node in reversed(list(graph)):
            if node not in neutral or (node.op_type != "Resize" and all(
                    v is None or v in blocked or constant_scalar(v) is not None for v in node.inputs)):
                continue
            if node.op_type == "Split" or any(use.node in neutral or use.node in chosen
                                              or (use.node in entering and use.idx in _sum_positions(use.node))
                                              for value in node.outputs for use in value.uses()):
                continue
            neutral.discard(node)
            for value in node.outputs:
                blocked.pop(value, None)

    @staticmethod
    def _one_pixel_outputs_stay_nchw(entering: list[ir.Node], neutral: set[ir.Node], chosen: set[ir.Node],
                                  blocked: dict[ir.Value, int]) -> list[ir.Node]:
        """A blocked_out conv whose output is one pixel (a squeeze-excite gate's per-channel vector) and that nothing
        in a region reads would only be reordered back to NCHW after it (mobilenetv3_like: a DeltaReorder of 16
        values, ~5 us a frame): it stays NCHW. Not one with a sum Z, which the region gives it blocked."""
        kept = []
        entering_set = set(entering)
        for node in entering:
            y = node.outputs[Y]
            found = static_dims(y)
            one_pixel = found is not None and len(found) == 4 and found[2] == 1 and found[3] == 1
            read_inside = any(use.node in neutral or use.node in chosen
                              or (use.node in entering_set and use.idx in _sum_positions(use.node)) for use in y.uses())
            if not one_pixel or read_inside or _sum_positions(node):
                kept.append(node)
                continue
            blocked.pop(y, None)
            plan = node.meta.get(PLAN_META_KEY)
            if plan is not None:
                plan.layout = "nchw (one-pixel output read as NCHW)"
        return kept

    @staticmethod
    def _reorder_inputs(graph: ir.Graph, scope: NameScope, inside: list[ir.Node], blocked: dict[ir.Value, int],
                        entering: set[ir.Node]) -> None:
        """A region node reading an NCHW tensor (a blocked DeltaConv's X and sum Z, a blocked_out one's Z, a Concat
        part, an Add operand) reads it through one DeltaReorder(to = "blocked") per tensor; a sum Z is padded like
        the conv's Y (its M channels)."""
        made: dict[ir.Value, ir.Value] = {}
        for node in inside:
            # a Split's other inputs are its sizes; a DeltaConv's its weights and state
            reads = ((_sum_positions(node) if node in entering else [CONV_INPUTS["x"], *_sum_positions(node)])
                     if is_delta_op(node) else [0] if node.op_type in _READS_X_ONLY else range(len(node.inputs)))
            for position in reads:
                x = node.inputs[position]
                if x is None or x in blocked or constant_scalar(x) is not None:
                    continue
                if x not in made:
                    # known: checked above; a sum Z has the conv's M channels (Y's)
                    channels = ((_output_channels(node) if position in _sum_positions(node) else _input_channels(node))
                                if is_delta_op(node) else _channels(x))
                    made[x] = _reorder(graph, scope, x, LAYOUT_BLOCKED, channels, before=node)
                    if is_padded(channels):
                        made[x].meta[PADDED_CHANNELS_META_KEY] = channels
                node.replace_input_with(position, made[x])

    @staticmethod
    def _reorder_outputs(graph: ir.Graph, scope: NameScope, blocked: dict[ir.Value, int], inside: set[ir.Node],
                         entering: set[ir.Node]) -> None:
        """Every reader of a blocked tensor outside the region (and every model output) gets NCHW through one
        DeltaReorder(to = "nchw") per tensor; a blocked_out conv's sum Z stays blocked."""
        for value in list(blocked):
            outside = [(use.node, use.idx) for use in value.uses()
                       if (use.node not in inside or _reads_nchw_at(use.node, use.idx))
                       and not (use.node in entering and use.idx in _sum_positions(use.node))]
            if not outside and not value.is_graph_output():
                continue
            producer = value.producer()
            nchw = _reorder(graph, scope, value, "nchw", blocked[value], after=producer)
            for node, index in outside:
                node.replace_input_with(index, nchw)
            if value.is_graph_output():  # the model output keeps its name and place, now on the NCHW copy
                name = value.name
                for i, output in enumerate(graph.outputs):
                    if output is value:
                        graph.outputs[i] = nchw
                value.name = scope.take(f"deltaonnx.blocked.{name}")
                nchw.name = name


# Region nodes of which only input 0 is a region tensor: a Split's other inputs are its sizes, a DeltaChannelScale's
# S its gate (NCHW), a DeltaGlobalAveragePool has no other.
_READS_X_ONLY = frozenset({"Split", DELTA_CHANNEL_SCALE, DELTA_GLOBAL_POOL})


def _reads_nchw_at(node: ir.Node, index: int) -> bool:
    """A region node's input read as NCHW: a DeltaChannelScale's gate S."""
    return node.domain == DOMAIN and node.op_type == DELTA_CHANNEL_SCALE and index == SCALE_S


def _sum_positions(node: ir.Node) -> list[int]:
    """[Z's input position] of a DeltaConv with a sum input (in Y's layout), else []."""
    return [CONV_INPUTS["z"]] if sum_input(node) is not None else []


class DeclarePaddedShapes(ir.passes.InPlacePass):
    """A padded blocked tensor holds roundup(C, b) channels, b the library's: its channel dim is declared as the
    symbol `deltaonnx_padded_<C>` (one per logical count, so equal shapes stay provably equal), never as C. Runs
    last, after every pass that reads the logical shapes (change maps, state)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            for value in node.outputs:
                channels = value.meta.get(PADDED_CHANNELS_META_KEY)
                if channels is None or value.shape is None or value.shape.rank() != 4:
                    continue
                found = list(value.shape.dims)
                value.shape = ir.Shape([found[0], padded_dim(channels), *found[2:]])
                modified = True
        return ir.passes.PassResult(model, modified=modified)


def _output_channels(node: ir.Node) -> int:
    """M of a DeltaConv (from its weights), C of a DeltaPool (can_block made sure it is known)."""
    if node.op_type == DELTA_POOL:
        return _channels(node.inputs[POOL_INPUTS["x"]])
    return int(constant_array(node.inputs[CONV_INPUTS["w"]]).shape[0])


def _input_channels(node: ir.Node) -> int:
    """C of a blocked DeltaConv (W.shape[1] * group) or DeltaPool."""
    if node.op_type == DELTA_POOL:
        return _channels(node.inputs[POOL_INPUTS["x"]])
    weights = constant_array(node.inputs[CONV_INPUTS["w"]])
    return int(weights.shape[1]) * (attribute(node, "group", 1) or 1)


def _reorder(graph: ir.Graph, scope: NameScope, source: ir.Value, to: str, channels: int, *,
             before: Optional[ir.Node] = None, after: Optional[ir.Node] = None) -> ir.Value:
    """A DeltaReorder of `source` (`channels` logical channels) to `to`, inserted before `before` or after
    `after`; its output. A padded tensor's reorder carries `channels` (the op pads or crops to it)."""
    output = ir.Value(name=scope.take(f"deltaonnx.{to}.{source.name}"))
    copy_type_and_shape(source, output)
    attributes: dict[str, object] = {"to": to}
    if is_padded(channels):
        attributes["channels"] = int(channels)
    node = ir.node(DELTA_REORDER, [source], attributes, domain=DOMAIN, outputs=[output],
                   name=numbered_name(scope, DELTA_REORDER))
    if before is not None:
        graph.insert_before(before, node)
    else:
        graph.insert_after(after, node)
    return output
