"""A squeeze-excite block inside a blocked region reads the region's tensor as it lies (docs/ops.md#deltaglobalaveragepool,
#deltachannelscale): its GlobalAveragePool becomes DeltaGlobalAveragePool (blocked X, NCHW [N,C,1,1] out) and its
per-channel Mul (the feature map times the gate [N or 1,C,1,1]) DeltaChannelScale (blocked X and Y, the gate NCHW), so
the region is not left and re-entered around it. Before, a DeltaReorder to NCHW fed both (and ORT's NCHW pool, 2-3x
its NCHWc one), and a DeltaReorder back to blocked followed the Mul: mobilenetv3_like's first block spent 10 + 13 + 9
+ 7 us there against 5 + 9 for the two ops (docs/results.md#twentieth-session).

Which nodes (found while ChooseBlockedLayout walks the graph forward; replaced once the region is final):
  - GlobalAveragePool (ONNX domain) of a 4-D tensor of the region;
  - Mul (ONNX domain) of a 4-D tensor X of the region and a tensor S of static shape [1 or N, C, 1, 1], C being X's
    logical channel count; S is read NCHW (a DeltaReorder to NCHW is added if S itself is blocked)."""
from __future__ import annotations

from typing import Optional

import onnx_ir as ir

from .delta_ops import DELTA_CHANNEL_SCALE, DELTA_GLOBAL_POOL, LAYOUT_BLOCKED
from .graph_edits import NameScope, numbered_name, substitute
from .protocol import DOMAIN
from .shapes import dims, static_dims

SCALE_X, SCALE_S = 0, 1  # DeltaChannelScale's inputs


def reads_for_pool(node: ir.Node, blocked: dict[ir.Value, int]) -> bool:
    """A GlobalAveragePool of a 4-D tensor of the region."""
    if node.op_type != "GlobalAveragePool" or node.domain not in ("", "ai.onnx") or not node.inputs:
        return False
    found = dims(node.inputs[0])
    return node.inputs[0] in blocked and found is not None and len(found) == 4


def channel_scale_operands(node: ir.Node, blocked: dict[ir.Value, int]) -> Optional[tuple[ir.Value, ir.Value]]:
    """(X, S) of a per-channel Mul of a region tensor X [N, C, H, W] and S [1 or N, C, 1, 1], else None."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    for x, s in (node.inputs, node.inputs[::-1]):
        if x is None or s is None or x not in blocked:
            continue
        x_dims, s_dims = static_dims(x), static_dims(s)
        if x_dims is None or s_dims is None or len(x_dims) != 4 or len(s_dims) != 4:
            continue
        if s_dims[1] == blocked[x] and s_dims[2:] == [1, 1] and s_dims[0] in (1, x_dims[0]) and x_dims[2:] != [1, 1]:
            return x, s
    return None


def replace_pool(graph: ir.Graph, scope: NameScope, node: ir.Node, channels: int) -> ir.Node:
    """`node` (a GlobalAveragePool of a region tensor of `channels` logical channels) replaced by
    DeltaGlobalAveragePool(layout = "blocked", channels); its NCHW output takes the pool's readers."""
    return _replace(graph, scope, node, DELTA_GLOBAL_POOL, [node.inputs[0]],
                    {"layout": ir.AttrString("layout", LAYOUT_BLOCKED), "channels": ir.AttrInt64("channels", channels)},
                    "pooled")


def replace_scale(graph: ir.Graph, scope: NameScope, node: ir.Node, x: ir.Value, s: ir.Value) -> ir.Node:
    """`node` (the Mul of X and S) replaced by DeltaChannelScale(X, S, layout = "blocked"), Y blocked like X."""
    return _replace(graph, scope, node, DELTA_CHANNEL_SCALE, [x, s], {"layout": ir.AttrString("layout", LAYOUT_BLOCKED)},
                    "scaled")


def _replace(graph: ir.Graph, scope: NameScope, node: ir.Node, op_type: str, inputs: list[ir.Value],
             attributes: dict, prefix: str) -> ir.Node:
    old = node.outputs[0]
    y = ir.Value(name=scope.take(f"deltaonnx.{prefix}.{old.name}"), type=old.type,
                 shape=ir.Shape(old.shape.dims) if old.shape is not None else None)
    y.meta.update(old.meta)
    new = ir.Node(DOMAIN, op_type, inputs, attributes, outputs=[y], name=numbered_name(scope, op_type))
    graph.insert_before(node, new)
    substitute(old, y)
    graph.remove(node, safe=True)
    return new
