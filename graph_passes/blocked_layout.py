"""Put the Delta ops in channel-blocked regions (docs/decisions/nchwc-exchange.md, docs/ops.md#blocked-layout).

A DeltaConv whose input and output channel counts are multiples of 16 (a DeltaPool: its channels) (hence of every block b a library picks:
16, 8, 4 or 1) gets `layout = "blocked"`: its X, Y and state hold the memory [N][C/b][H][W][b] under their 4-D
shapes. Its Y stays blocked through the ops that compute the same thing on blocked memory (layout-neutral:
elementwise ops of region tensors of one shape or with scalar constants, Concat/Split along channels with parts
that are multiples of 16); everything else reads NCHW through a DeltaReorder(to = "nchw") inserted once per
tensor, and a blocked DeltaConv whose input is NCHW reads it through a DeltaReorder(to = "blocked"). A DeltaConv
whose output channels are multiples of 16 but not its input's (a backbone's first conv, on 3 channels), or that
reads a model input, gets `layout = "blocked_out"`: it reads NCHW and writes the region's memory itself. Model outputs
are always NCHW. The pass runs before the state pass, so a Delta op's state follows its layout and the model's
outputs are still the graph's only outputs.

Decided forward in graph order (the graph is topologically sorted by the normalisation): a neutral op is in the
region when it reads a blocked tensor; the NCHW tensors it also reads (the upsampled half of a neck's Concat) are
reordered to blocked, so the region goes on."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .constants import constant_array, constant_scalar
from .conversion_context import PLAN_META_KEY, ConversionContext
from .delta_ops import (CONV_INPUTS, DELTA_POOL, DELTA_REORDER, LAYOUT_BLOCKED, LAYOUT_BLOCKED_OUT, POOL_INPUTS, Y,
                        is_delta_op)
from .graph_edits import NameScope, attribute, copy_type_and_shape
from .plan import reads_model_input
from .protocol import DOMAIN
from .shapes import dims, dims_provably_equal, static_dims

# Channel counts in a region are multiples of this: every b a library may pick divides it.
CHANNEL_MULTIPLE = 16

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
    docs/ops.md#blocked-layout, or a channel count a library's block might not divide)."""
    if attribute(node, "gate", "pixel") == "block":
        return "block gate"
    if output_only and node.op_type == DELTA_POOL:
        return "a pool blocks both sides"
    if not output_only and reads_model_input(node):  # the input gate and the identical-frame plan read the frame in NCHW
        return "reads a model input"
    if node.op_type == DELTA_POOL:
        if not _multiple_channels(node.inputs[POOL_INPUTS["x"]]):
            return f"channels not known multiples of {CHANNEL_MULTIPLE}"
        return None
    if attribute(node, "activation", "") == "Softmax":
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
    if output_only and out_channels % CHANNEL_MULTIPLE:
        return f"output channels {out_channels} not a multiple of {CHANNEL_MULTIPLE}"
    if not output_only and (in_channels % CHANNEL_MULTIPLE or out_channels % CHANNEL_MULTIPLE):
        return f"channels {in_channels}->{out_channels} not multiples of {CHANNEL_MULTIPLE}"
    return None


def _multiple_channels(value: Optional[ir.Value]) -> bool:
    """A 4-D tensor whose channel count is known and a multiple of CHANNEL_MULTIPLE."""
    found = static_dims(value)
    return found is not None and len(found) == 4 and found[1] is not None and found[1] % CHANNEL_MULTIPLE == 0


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
        blocked: dict[ir.Value, None] = {}  # values whose memory is blocked, in graph order (names are deterministic)
        chosen: list[ir.Node] = []  # the Delta ops made blocked
        entering: list[ir.Node] = []  # the DeltaConvs made blocked_out: NCHW input, their output opens a region
        neutral: set[ir.Node] = set()  # the layout-neutral ops inside a region
        for node in graph:
            if is_delta_op(node):
                why = can_block(node)
                layout = LAYOUT_BLOCKED if why is None else f"nchw ({why})"
                if why is None:
                    chosen.append(node)
                    blocked[node.outputs[Y]] = None
                elif can_block(node, output_only=True) is None:
                    # the first conv of a backbone (3 input channels, or reading the frame): it writes the region's
                    # memory itself instead of a DeltaReorder after it (docs/ops.md#blocked-layout)
                    entering.append(node)
                    blocked[node.outputs[Y]] = None
                    layout = LAYOUT_BLOCKED_OUT
                plan = node.meta.get(PLAN_META_KEY)
                if plan is not None:
                    plan.layout = layout
            elif self._neutral(node, blocked):
                neutral.add(node)
                blocked.update(dict.fromkeys(node.outputs))
        if not chosen and not entering:
            return ir.passes.PassResult(model, modified=False)
        scope = NameScope(graph)
        for node in chosen:
            node.attributes["layout"] = ir.AttrString("layout", LAYOUT_BLOCKED)
        for node in entering:
            node.attributes["layout"] = ir.AttrString("layout", LAYOUT_BLOCKED_OUT)
        # A blocked_out conv reads NCHW: it is outside the region for its input (a blocked one is reordered back),
        # inside for its sum Z, which is in Y's layout.
        self._reorder_inputs(graph, scope, [n for n in graph if n in neutral or n in chosen or n in entering], blocked,
                             set(entering))
        self._reorder_outputs(graph, scope, blocked, set(chosen) | neutral, set(entering))
        return ir.passes.PassResult(model, modified=True)

    @staticmethod
    def _neutral(node: ir.Node, blocked: dict[ir.Value, None]) -> bool:
        """True when `node` reads at least one blocked tensor and computes the same on blocked memory; the tensors
        it reads that are not blocked (4-D, channels a multiple of 16) are then read through a reorder."""
        if node.domain not in ("", "ai.onnx"):
            return False
        inputs = [v for v in node.inputs if v is not None]
        if not any(v in blocked for v in inputs):
            return False
        op, out = node.op_type, node.outputs
        if op in _UNARY_OPS:
            return node.inputs[0] in blocked and all(constant_scalar(v) is not None for v in inputs[1:])
        if op in _ELEMENTWISE_OPS:
            out_dims = dims(out[0])
            if out_dims is None or len(out_dims) != 4 or not _multiple_channels(out[0]):
                return False
            for value in inputs:
                if constant_scalar(value) is not None:
                    continue
                found = dims(value)
                if found is None or len(found) != 4 or not all(map(dims_provably_equal, found, out_dims)):
                    return False
            return True
        if op == "Concat":
            return _channel_axis(node, None) == 1 and all(_multiple_channels(v) for v in inputs + list(out))
        if op == "Split":
            return (node.inputs[0] in blocked and _channel_axis(node, 0) == 1
                    and all(_multiple_channels(v) for v in out))
        return False

    @staticmethod
    def _reorder_inputs(graph: ir.Graph, scope: NameScope, inside: list[ir.Node], blocked: dict[ir.Value, None],
                        entering: set[ir.Node]) -> None:
        """A region node reading an NCHW tensor (a blocked DeltaConv's X and sum Z, a blocked_out one's Z, a Concat
        part, an Add operand) reads it through one DeltaReorder(to = "blocked") per tensor."""
        made: dict[ir.Value, ir.Value] = {}
        for node in inside:
            # a Split's other inputs are its sizes; a DeltaConv's its weights and state
            reads = ((_sum_positions(node) if node in entering else [CONV_INPUTS["x"], *_sum_positions(node)])
                     if is_delta_op(node) else [0] if node.op_type == "Split" else range(len(node.inputs)))
            for position in reads:
                x = node.inputs[position]
                if x is None or x in blocked or constant_scalar(x) is not None:
                    continue
                if x not in made:
                    made[x] = _reorder(graph, scope, x, LAYOUT_BLOCKED, before=node)
                node.replace_input_with(position, made[x])

    @staticmethod
    def _reorder_outputs(graph: ir.Graph, scope: NameScope, blocked: dict[ir.Value, None], inside: set[ir.Node],
                         entering: set[ir.Node]) -> None:
        """Every reader of a blocked tensor outside the region (and every model output) gets NCHW through one
        DeltaReorder(to = "nchw") per tensor; a blocked_out conv's sum Z stays blocked."""
        for value in list(blocked):
            outside = [(use.node, use.idx) for use in value.uses()
                       if use.node not in inside and not (use.node in entering and use.idx in _sum_positions(use.node))]
            if not outside and not value.is_graph_output():
                continue
            producer = value.producer()
            nchw = _reorder(graph, scope, value, "nchw", after=producer)
            for node, index in outside:
                node.replace_input_with(index, nchw)
            if value.is_graph_output():  # the model output keeps its name and place, now on the NCHW copy
                name = value.name
                for i, output in enumerate(graph.outputs):
                    if output is value:
                        graph.outputs[i] = nchw
                value.name = scope.take(f"deltaonnx.blocked.{name}")
                nchw.name = name


def _sum_positions(node: ir.Node) -> list[int]:
    """[Z's input position] of a DeltaConv with a sum input (in Y's layout), else []."""
    z = CONV_INPUTS["z"]
    return [z] if node.op_type != DELTA_POOL and len(node.inputs) > z and node.inputs[z] is not None else []


def _reorder(graph: ir.Graph, scope: NameScope, source: ir.Value, to: str, *, before: Optional[ir.Node] = None,
             after: Optional[ir.Node] = None) -> ir.Value:
    """A DeltaReorder of `source` to `to`, inserted before `before` or after `after`; its output."""
    output = ir.Value(name=scope.take(f"deltaonnx.{to}.{source.name}"))
    copy_type_and_shape(source, output)
    node = ir.node(DELTA_REORDER, [source], {"to": to}, domain=DOMAIN, outputs=[output],
                   name=_next_reorder_name(scope))
    if before is not None:
        graph.insert_before(before, node)
    else:
        graph.insert_after(after, node)
    return output


def _next_reorder_name(scope: NameScope) -> str:
    """DeltaReorder_0, DeltaReorder_1, ... (the names its state is listed under, like DeltaConv_0)."""
    index = 0
    while scope.is_used(f"{DELTA_REORDER}_{index}"):
        index += 1
    return scope.take(f"{DELTA_REORDER}_{index}")
