"""Which tensors carry a change map, and how a map travels through the ops between two Delta ops.

A change map of an NCHW tensor is uint8 [N,1,H,W]; 0 promises "this pixel did not change since the last
run". It survives ops that keep locality (docs/design.md "Change maps flow from op to op"):
  - elementwise unary ops and activations, and arithmetic with frame-invariant operands (constants,
    per-channel parameters, shapes): the map is unchanged;
  - elementwise ops of several changing tensors: the union of their maps (each must have one);
  - Concat/Split/Slice along channels: unchanged / union;
  - nearest Resize/Upsample: the map resized the same way;
  - ConvTranspose whose kernel equals its stride (no pads, dilations or output padding): each output pixel
    reads one input pixel, so the map upsampled by the stride;
  - Identity, Dropout, identity Transpose, DeltaReorder;
  - DeltaResize: its own map_out (the map upsampled);
  - DeltaChannelScale: as the Mul it replaced (the union of X's map and its scale's);
  - DeltaChannelGate: its own map_out (one value per item), with or without a map of X.
Anything else loses the map; its consumers then compare their whole input.

The rules are written once and used twice: by the planner, with opaque tokens, to know which nodes
would receive a map (`DryRunMaps`), and by the wiring pass, which builds the map tensors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Optional, Protocol, TypeVar

import onnx_ir as ir

from .constants import FrameInvariance, constant_ints
from .delta_ops import (CHANNEL_GATE_MAP_OUT, RESIZE_MAP_OUT, is_channel_gate, is_channel_scale, is_reorder, is_resize,
                        keeps_last_output)
from .graph_edits import attribute
from .shapes import Dim, dim_is_one, dims, dims_provably_equal

M = TypeVar("M")

# Elementwise ops of one changing input (their other inputs must be frame-invariant parameters).
_UNARY_OPS = frozenset(
    {
        "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
        "Softplus", "Softsign", "Gelu", "Mish", "Swish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt",
        "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast",
        "CastLike", "ThresholdedRelu", "Shrink", "IsNaN", "IsInf", "Not", "Clip", "BatchNormalization",
        "LRN",
    }
)  # fmt: skip
# Per-pixel ops along the channel axis only (from opset 13, where `axis` means one axis).
_CHANNEL_REDUCING_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
# Elementwise ops with broadcasting over all inputs.
_ELEMENTWISE_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Mod", "And", "Or",
        "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Where", "BitShift",
    }
)  # fmt: skip
_NCHW_SPATIAL_AXES = (0, 2, 3)  # the axes a change map keeps (channel collapses to 1)


class MapAlgebra(Protocol[M]):
    """Creates the maps of op outputs from the maps of their inputs."""

    def union(self, maps: list[M], *, shapes_equal: bool, like: ir.Value, at: ir.Node) -> M:
        """The OR of `maps`. With shapes_equal False they may differ in size and broadcast (NCHW rules)."""

    def resize(self, source: M, *, resize_node: ir.Node, like: ir.Value) -> Optional[M]:
        """`source` resized as `resize_node` resizes its input; None if it cannot be."""

    def upsample(self, source: M, *, factors: tuple[int, int], like: ir.Value, at: ir.Node) -> M:
        """`source` repeated factors[0] x factors[1] times per pixel (nearest, output pixel (y, x) reads
        (y // fh, x // fw)), the map of `like`, built before `at`."""


class DryRunMaps:
    """Opaque tokens: tells who would receive a map, builds nothing. A fresh token wherever the real
    wiring would create a new tensor, so that "the same map" means the same in both."""

    def union(self, maps, *, shapes_equal, like, at):
        return object()

    def resize(self, source, *, resize_node, like):
        return object()

    def upsample(self, source, *, factors, like, at):
        return object()


class ChangeMapPropagation(Generic[M]):
    """Forward pass over a graph (in its topological order) computing the map of every value."""

    def __init__(self, graph: ir.Graph, opset: int, algebra: MapAlgebra[M]) -> None:
        self.graph = graph
        self.opset = opset
        self.algebra = algebra
        self.invariant = FrameInvariance()
        # the maps each union built here ORs (a map not listed is its own only source)
        self._union_sources: dict[M, frozenset] = {}

    def run(
        self,
        seeds: dict[ir.Value, M],
        *,
        visit: Optional[Callable[[ir.Node, dict[ir.Value, M]], None]] = None,
        nodes: Optional[Iterable[ir.Node]] = None,
    ) -> dict[ir.Value, M]:
        """Maps of all values reachable from the seeds. `visit(node, maps)` is called for each node
        before its outputs are computed (the wiring pass connects map inputs there)."""
        maps: dict[ir.Value, M] = dict(seeds)
        for node in list(self.graph if nodes is None else nodes):
            if visit is not None:
                visit(node, maps)
            if is_channel_gate(node):  # S's map is the op's own output, made with or without X's map
                maps.setdefault(node.outputs[0], node.outputs[CHANNEL_GATE_MAP_OUT])
                continue
            if node.domain != "" and not keeps_last_output(node) and not is_channel_scale(node):
                continue
            for output, produced in zip(node.outputs, self._outputs_maps(node, maps)):
                if produced is not None and output not in maps:
                    maps[output] = produced
        return maps

    # --- the rules ------------------------------------------------------------------------------------

    def _outputs_maps(self, node: ir.Node, maps: dict[ir.Value, M]) -> list[Optional[M]]:
        op = node.op_type
        if not any(v is not None and v in maps for v in node.inputs):
            return []
        if op in _UNARY_OPS:
            return [self._unary(node, maps)]
        if op in _CHANNEL_REDUCING_OPS:
            return [self._unary(node, maps) if self._channel_axis_only(node) else None]
        if op in _ELEMENTWISE_OPS or is_channel_scale(node):
            return [self._elementwise(node, maps)]
        if op == "Concat":
            return [self._concat(node, maps)]
        if op == "Split":
            produced = self._split(node, maps)
            return [produced] * len(node.outputs)
        if op == "Slice":
            return [self._slice(node, maps)]
        if op in ("Resize", "Upsample"):
            return [self._resize(node, maps)]
        if op == "ConvTranspose":
            return [self._conv_transpose(node, maps)]
        if is_reorder(node):  # the same pixels in another memory order
            return [maps.get(node.inputs[0])]
        if is_resize(node):  # behind a map (wire_maps.py connects it) the op upsamples it itself
            return [node.outputs[RESIZE_MAP_OUT] if node.inputs[0] in maps else None]
        if op == "Transpose":
            perm = attribute(node, "perm")
            return [maps.get(node.inputs[0]) if perm is not None and list(perm) == [0, 1, 2, 3] else None]
        return []

    def _unary(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        source = node.inputs[0]
        if source is None or source not in maps or not _is_nchw(source):
            return None
        if not all(self.invariant(v) for v in node.inputs[1:]):
            return None  # e.g. a Clip bound that is computed per frame
        return maps[source]

    def _channel_axis_only(self, node: ir.Node) -> bool:
        if self.opset < 13:
            return False  # before 13, axis=1 flattens C*H*W into one softmax
        axis = attribute(node, "axis", -1)
        return axis in (1, -3) and _is_nchw(node.inputs[0])

    def _elementwise(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        output = node.outputs[0]
        operands = [v for v in node.inputs if v is not None]
        changing = [v for v in operands if not self.invariant(v)]
        if not changing or any(v not in maps or not _is_nchw(v) for v in changing):
            return None  # a changing operand without a map (e.g. an SE scale from global pooling)
        fixed = [v for v in operands if self.invariant(v)]
        if not all(self._keeps_extent(v, changing, output) for v in fixed):
            return None
        distinct = _distinct([maps[v] for v in changing])
        if len(distinct) == 1:  # e.g. x * Sigmoid(x): one map means one N, H, W
            return distinct[0]
        return self._broadcast_union(distinct, changing, node)

    def _broadcast_union(self, distinct: list[M], changing: list[ir.Value], node: ir.Node) -> Optional[M]:
        # Maps broadcast like their tensors: where an operand is 1 wide (e.g. a squeeze-excite scale,
        # [N,C,1,1]), its one map pixel marks the whole output, which is exactly what changed.
        shapes_equal = _same_nhw(changing)
        if shapes_equal:
            return self._union_of_equal_shapes(distinct, node)
        return self.algebra.union(distinct, shapes_equal=False, like=node.outputs[0], at=node)

    def _union_of_equal_shapes(self, maps: list[M], node: ir.Node) -> M:
        """The OR of maps of one shape, each source map once: a map already inside another's union adds nothing
        (a C2f's Concat reads its Split's half and the residual sums built on it, whose map ORs that half's map
        already), and where one map holds all the others' sources it is the union itself, no node."""
        sources = [self._union_sources.get(m, frozenset((m,))) for m in maps]
        kept = [m for i, (m, own) in enumerate(zip(maps, sources))
                if not any(own < other or (own == other and j < i) for j, other in enumerate(sources) if j != i)]
        if len(kept) == 1:
            return kept[0]
        union = self.algebra.union(kept, shapes_equal=True, like=node.outputs[0], at=node)
        self._union_sources[union] = frozenset().union(*sources)
        return union

    def _keeps_extent(self, fixed: ir.Value, changing: list[ir.Value], output: ir.Value) -> bool:
        """A frame-invariant operand must not stretch the changing tensors' batch or spatial extent
        (its dims there are 1), or the output must provably have the changing tensors' extent."""
        fixed_dims = dims(fixed)
        if fixed_dims is not None and len(fixed_dims) <= 4:
            aligned: list[Optional[Dim]] = [None] * (4 - len(fixed_dims)) + fixed_dims
            if all(aligned[a] is None or dim_is_one(aligned[a]) for a in _NCHW_SPATIAL_AXES):
                return True
        out_dims = dims(output)
        if out_dims is None or len(out_dims) != 4:
            return False
        return all(
            all(dims_provably_equal(out_dims[a], dims(v)[a]) for a in _NCHW_SPATIAL_AXES) for v in changing
        )

    def _concat(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        if _normalized_axis(attribute(node, "axis", None), node.outputs[0], node.inputs) != 1:
            return None
        changing = [v for v in node.inputs if v is not None and not self.invariant(v)]
        if not changing or any(v not in maps for v in changing):
            return None
        distinct = _distinct([maps[v] for v in changing])
        if len(distinct) == 1:
            return distinct[0]
        # Concat along channels requires equal N, H, W: the maps have one shape.
        return self._union_of_equal_shapes(distinct, node)

    def _split(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        source = node.inputs[0]
        if source not in maps or _normalized_axis(attribute(node, "axis", 0), source, [source]) != 1:
            return None
        if not all(self.invariant(v) for v in node.inputs[1:]):
            return None
        return maps[source]

    def _slice(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        source = node.inputs[0]
        if source not in maps or not _is_nchw(source):
            return None
        if self.opset < 10:
            axes = attribute(node, "axes")
            if axes is None:
                return None
            axes = list(axes)
        else:
            if not all(self.invariant(v) for v in node.inputs[1:]):
                return None
            if len(node.inputs) < 4 or node.inputs[3] is None:
                return None  # default axes start at 0 (batch)
            axes = constant_ints(node.inputs[3])
            if axes is None:
                return None
        if not axes or any(a not in (1, -3) for a in axes):
            return None
        return maps[source]

    def _resize(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        source = node.inputs[0]
        if source not in maps or not _is_nchw(source):
            return None
        mode = attribute(node, "mode", "nearest")
        if mode != "nearest":
            return None
        if attribute(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
            return None
        if not all(self.invariant(v) for v in node.inputs[1:]):
            return None
        axes = attribute(node, "axes")
        if axes is not None and not set(axes) <= {2, 3, -1, -2}:
            return None
        return self.algebra.resize(maps[source], resize_node=node, like=node.outputs[0])

    def _conv_transpose(self, node: ir.Node, maps: dict[ir.Value, M]) -> Optional[M]:
        """Output pixel o of a ConvTranspose gets input pixel i through tap t where o = i * s + t * d - pad. With
        the kernel equal to the stride, no pads, dilations 1 and no output padding, (i, t) = (o // s, o % s):
        one input pixel (all its channels) and the bias decide each output pixel, so an unchanged input pixel
        leaves its s x s block unchanged. Other geometries (k 4 s 2 p 1, ...) lose the map."""
        source = node.inputs[0]
        if source not in maps or not _is_nchw(source) or self.opset < 11:
            return None  # the map's Resize needs nearest_mode floor (opset 11)
        if not all(self.invariant(v) for v in node.inputs[1:] if v is not None):
            return None
        weight = dims(node.inputs[1]) if len(node.inputs) > 1 else None
        kernel = attribute(node, "kernel_shape")
        if kernel is None and weight is not None and len(weight) == 4:
            kernel = weight[2:]
        strides = attribute(node, "strides", [1, 1])
        if kernel is None or len(kernel) != 2 or len(strides) != 2:
            return None
        if any(not isinstance(k, int) or k != s for k, s in zip(kernel, strides)):
            return None
        geometry_is_plain = (
            attribute(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
            and attribute(node, "output_shape") is None
            and all(p == 0 for p in attribute(node, "pads", [0] * 4))
            and all(d == 1 for d in attribute(node, "dilations", [1, 1]))
            and all(p == 0 for p in attribute(node, "output_padding", [0, 0]))
        )
        if not geometry_is_plain:
            return None
        if tuple(strides) == (1, 1):  # 1x1: pointwise, the map as it is
            return maps[source]
        return self.algebra.upsample(maps[source], factors=(int(strides[0]), int(strides[1])),
                                     like=node.outputs[0], at=node)


def _distinct(items: list) -> list:
    found: list = []
    for item in items:
        if not any(item is seen for seen in found):
            found.append(item)
    return found


def _is_nchw(value: Optional[ir.Value]) -> bool:
    found = dims(value)
    return found is not None and len(found) == 4


def _same_nhw(values: list[ir.Value]) -> bool:
    first = dims(values[0])
    if first is None or len(first) != 4:
        return False
    for value in values[1:]:
        other = dims(value)
        if other is None or len(other) != 4:
            return False
        if not all(dims_provably_equal(first[a], other[a]) for a in _NCHW_SPATIAL_AXES):
            return False
    return True


def _normalized_axis(axis: Optional[int], reference: ir.Value, others: Iterable[Optional[ir.Value]]) -> Optional[int]:
    """`axis` made non-negative for a rank-4 tensor; None unless the rank is known to be 4."""
    if axis is None:
        return None
    ranks = {len(d) for d in (dims(v) for v in [reference, *others] if v is not None) if d is not None}
    if ranks != {4}:
        return None
    return axis + 4 if axis < 0 else axis
