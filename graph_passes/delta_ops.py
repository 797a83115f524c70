"""The Delta ops' signatures as docs/ops.md fixes them: op names and input/output positions."""
from __future__ import annotations

from .protocol import DOMAIN

DELTA_CONV = "DeltaConv"
DELTA_POOL = "DeltaPool"
DELTA_MAP_UNION = "DeltaMapUnion"
DELTA_GATE = "DeltaGate"
DELTA_REORDER = "DeltaReorder"  # NCHW <-> channel-blocked memory (docs/ops.md#deltareorder)
DELTA_RESIZE = "DeltaResize"  # a nearest upsample by integer factors in a blocked region (docs/ops.md#deltaresize)
# A squeeze-excite block's global average pool and channel scale reading a blocked region's tensor as it lies
# (docs/ops.md#deltaglobalaveragepool, #deltachannelscale); inputs X (and the scale S), output Y; no state.
DELTA_GLOBAL_POOL = "DeltaGlobalAveragePool"
DELTA_CHANNEL_SCALE = "DeltaChannelScale"
# A squeeze-excite gate in one node (docs/ops.md#deltachannelgate): X's pool and two 1x1 convs; outputs S and S's
# per-item change map. No state.
DELTA_CHANNEL_GATE = "DeltaChannelGate"
CHANNEL_GATE_INPUTS = {"x": 0, "w1": 1, "b1": 2, "w2": 3, "b2": 4, "map_in": 5}
CHANNEL_GATE_MAP_OUT = 1
DELTA_OPS = (DELTA_CONV, DELTA_POOL)
OPSET_VERSION = 1

# Input positions.
# DeltaConv's sum Z and its change map map_z (docs/ops.md): a residual Add fused into the conv (fuse_residual_sum.py).
CONV_INPUTS = {"x": 0, "w": 1, "b": 2, "x_ref": 3, "y_prev": 4, "map_in": 5, "z": 6, "map_z": 7}
POOL_INPUTS = {"x": 0, "x_ref": 1, "y_prev": 2, "map_in": 3}
# Output positions (both ops).
Y, X_REF_NEXT, MAP_OUT = 0, 1, 2
# DeltaGate: inputs X, X_ref (state), map_in (external, optional); outputs the gated frame (= X_ref_next)
# and its change map.
GATE_INPUTS = {"x": 0, "x_ref": 1, "map_in": 2}
GATE_X_GATED, GATE_MAP_OUT = 0, 1
GATE_RULES = ("pixel", "block")
# How a Delta op's tensors lie in memory (attribute `layout`, docs/ops.md#blocked-layout).
LAYOUT_NCHW, LAYOUT_BLOCKED = "nchw", "blocked"
LAYOUTS = (LAYOUT_NCHW, LAYOUT_BLOCKED)  # convert's choice (--memory-layout)
# DeltaConv only: X and X_ref NCHW, Y and Y_prev blocked (a conv entering a blocked region writes it itself).
LAYOUT_BLOCKED_OUT = "blocked_out"


# DeltaReorder's and DeltaResize's input positions: X, its last output Y_prev (state) and X's change map, both
# optional. DeltaResize's outputs: Y and its map_out (the map upsampled).
REORDER_INPUTS = {"x": 0, "y_prev": 1, "map_in": 2}
RESIZE_MAP_OUT = 1


def input_positions(op_type: str) -> dict[str, int]:
    return {DELTA_CONV: CONV_INPUTS, DELTA_REORDER: REORDER_INPUTS, DELTA_RESIZE: REORDER_INPUTS,
            DELTA_CHANNEL_GATE: CHANNEL_GATE_INPUTS}.get(op_type, POOL_INPUTS)


def is_reorder(node) -> bool:
    return node.domain == DOMAIN and node.op_type == DELTA_REORDER


def is_resize(node) -> bool:
    return node.domain == DOMAIN and node.op_type == DELTA_RESIZE


def is_channel_scale(node) -> bool:
    return node.domain == DOMAIN and node.op_type == DELTA_CHANNEL_SCALE


def is_channel_gate(node) -> bool:
    return node.domain == DOMAIN and node.op_type == DELTA_CHANNEL_GATE


def keeps_last_output(node) -> bool:
    """DeltaReorder and DeltaResize: ops whose output is a function of X alone, kept as state behind a change map."""
    return is_reorder(node) or is_resize(node)


def is_delta_op(node) -> bool:
    return node.domain == DOMAIN and node.op_type in DELTA_OPS


def sum_input(node):
    """A DeltaConv's sum input Z (docs/ops.md, the sum input), or None: any other node, or a conv without one."""
    z = CONV_INPUTS["z"]
    if node.domain != DOMAIN or node.op_type != DELTA_CONV or len(node.inputs) <= z:
        return None
    return node.inputs[z]
