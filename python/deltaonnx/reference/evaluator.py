"""onnx.reference.ReferenceEvaluator support: the whole-model oracle of docs/design.md "Correctness oracle"."""
from __future__ import annotations

import numpy as np

from ..graph_passes.protocol import DEFAULT_GATE_BLOCK, DOMAIN
from .delta_ops import (delta_channel_gate, delta_channel_scale, delta_conv, delta_global_average_pool, delta_pool, delta_reorder,
                        delta_resize, map_union)
from .gate import delta_gate

def _reference_ops(channel_block: int | None = None):
    """The Delta ops for ReferenceEvaluator; channel_block: b of blocked tensors (default: the library's)."""
    from onnx.reference.op_run import OpRun

    class DeltaConv(OpRun):
        op_domain = DOMAIN

        def _run(self, X, W, B=None, X_ref=None, Y_prev=None, map_in=None, Z=None, map_z=None, **attrs):
            names = list(self.onnx_node.input) + [""] * 8
            # Absent inputs are judged by name: the evaluator may hand a stale value for "".
            B = None if not names[2] or (B is not None and np.asarray(B).size == 0) else B
            dropped = not names[3]  # an absent X_ref (not an empty state): the dropped reference of docs/ops.md
            map_in = map_in if names[5] else None
            Z, map_z = (Z if names[6] else None), (map_z if names[7] else None)
            return delta_conv(X, W, B, None if dropped else X_ref, Y_prev, map_in, Z, map_z, drop_reference=dropped,
                              channel_block=channel_block, **attrs)

    class DeltaPool(OpRun):
        op_domain = DOMAIN

        def _run(self, X, X_ref=None, Y_prev=None, map_in=None, **attrs):
            names = list(self.onnx_node.input) + [""] * 4
            dropped = not names[1]
            map_in = map_in if names[3] else None
            return delta_pool(X, None if dropped else X_ref, Y_prev, map_in, drop_reference=dropped,
                              channel_block=channel_block, **attrs)

    class DeltaMapUnion(OpRun):
        op_domain = DOMAIN

        def _run(self, *maps):
            return (map_union(*[m for m in maps if m is not None]),)

    class DeltaGate(OpRun):
        op_domain = DOMAIN

        def _run(self, X, X_ref=None, map_in=None, rule="block", threshold=0.0, gate_block=DEFAULT_GATE_BLOCK,
                 gate_hard=-1.0):
            names = list(self.onnx_node.input) + [""] * 3
            map_in = map_in if names[2] and map_in is not None and 0 not in np.shape(map_in) else None
            rule = rule.decode() if isinstance(rule, bytes) else rule
            return delta_gate(X, X_ref, map_in, rule=rule, threshold=threshold, gate_block=gate_block,
                              gate_hard=gate_hard)

    class DeltaReorder(OpRun):
        op_domain = DOMAIN

        def _run(self, X, Y_prev=None, map_in=None, to=None, channels=None):
            to = to.decode() if isinstance(to, bytes) else to
            if to is None:
                raise ValueError("DeltaReorder's attribute 'to' is required")
            names = list(self.onnx_node.input) + [""] * 3
            return (delta_reorder(X, Y_prev if names[1] else None, map_in if names[2] else None, to=to,
                                  block=channel_block, channels=channels),)

    class DeltaResize(OpRun):
        op_domain = DOMAIN

        def _run(self, X, Y_prev=None, map_in=None, factors=None, layout="nchw"):
            if factors is None:
                raise ValueError("DeltaResize's attribute 'factors' is required")
            layout = layout.decode() if isinstance(layout, bytes) else layout
            names = list(self.onnx_node.input) + [""] * 3
            return delta_resize(X, Y_prev if names[1] else None, map_in if names[2] else None, factors=factors,
                                layout=layout, block=channel_block)

    class DeltaGlobalAveragePool(OpRun):
        op_domain = DOMAIN

        def _run(self, X, layout="nchw", channels=None):
            layout = layout.decode() if isinstance(layout, bytes) else layout
            return (delta_global_average_pool(X, layout=layout, channels=channels, block=channel_block),)

    class DeltaChannelScale(OpRun):
        op_domain = DOMAIN

        def _run(self, X, S, layout="nchw"):
            layout = layout.decode() if isinstance(layout, bytes) else layout
            return (delta_channel_scale(X, S, layout=layout, block=channel_block),)

    class DeltaChannelGate(OpRun):
        op_domain = DOMAIN

        def _run(self, X, W1, B1=None, W2=None, B2=None, map_in=None, layout="nchw", channels=None, activation="",
                 activation_params=None, gate_activation="", gate_activation_params=None):
            text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
            names = list(self.onnx_node.input) + [""] * 6
            return delta_channel_gate(X, W1, B1 if names[2] else None, W2, B2 if names[4] else None,
                                      map_in if names[5] else None, layout=text(layout), channels=channels,
                                      activation=text(activation), activation_params=tuple(activation_params or ()),
                                      gate_activation=text(gate_activation),
                                      gate_activation_params=tuple(gate_activation_params or ()), block=channel_block)

    return [DeltaConv, DeltaPool, DeltaMapUnion, DeltaGate, DeltaReorder, DeltaResize, DeltaGlobalAveragePool,
            DeltaChannelScale, DeltaChannelGate]


def make_reference_evaluator(model, channel_block: int | None = None, **kwargs):
    """An onnx.reference.ReferenceEvaluator that runs a converted model (a ModelProto or a path), with
    DeltaConv, DeltaPool, DeltaMapUnion, DeltaGate, DeltaReorder, DeltaResize, DeltaGlobalAveragePool,
    DeltaChannelScale and DeltaChannelGate implemented by this module: the whole-model
    oracle of docs/design.md "Correctness oracle". Absent optional inputs (empty names, missing trailing inputs)
    reach the ops as None. channel_block: b of blocked tensors (default: the library's, read when first needed)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model, new_ops=_reference_ops(channel_block), **kwargs)
