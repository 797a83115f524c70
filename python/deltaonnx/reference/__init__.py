"""Numpy reference of the deltaonnx custom ops: the test oracle for the C++ and CUDA kernels.

Written for clarity, not speed: every function is a literal reading of a rule of docs/design.md ("The ops") with
the signatures of docs/ops.md. The window geometry (output extent, padding, which input pixels a window tap
reads) lives in one place, `_Window` (window.py), and conv, max-pool and the change-map OR-pool all iterate over
the same tap views, so they cannot disagree on what a receptive field is. The modules: window.py (geometry),
dense.py (the dense ops and activations), rules.py (the delta rules), gate.py (DeltaGate), delta_ops.py (the
ops with their state), evaluator.py (ReferenceEvaluator support); this package exports them all.

Conventions: NCHW float32 tensors; change maps are uint8 [N,1,H,W], nonzero = marked; pads are ONNX's
[top, left, bottom, right]; state is "empty" when any dimension of X_ref is zero.
"""
from __future__ import annotations

from ..blocked_memory import (LAYOUTS, REORDER_TARGETS, blocked_sides, from_blocked, library_channel_block,
                              padded_channels, run_blocked, to_blocked)
# DOMAIN: the ops' domain; the block gate's defaults (k, and tau_hard as a multiple of tau) as the converter and
# the ops (gate_engine.h) use them.
from ..graph_passes.protocol import DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD, DOMAIN
from .delta_ops import (delta_channel_gate, delta_channel_scale, delta_conv, delta_global_average_pool, delta_pool, delta_reorder,
                        delta_resize, map_union)
from .dense import activation, conv2d, maxpool2d
from .evaluator import make_reference_evaluator
from .gate import GATE_RULES, delta_gate, gate_map_resolution, gate_parameters
from .rules import apply_dense_fraction, changed_pixels, output_recompute_mask, state_is_empty
from .window import _Window, resolve_pads

__all__ = [
    "DEFAULT_GATE_BLOCK", "DEFAULT_GATE_HARD", "DOMAIN", "GATE_RULES", "LAYOUTS", "REORDER_TARGETS", "_Window",
    "activation", "apply_dense_fraction", "blocked_sides", "changed_pixels", "conv2d", "delta_channel_scale",
    "delta_channel_gate", "delta_conv", "delta_gate", "delta_global_average_pool", "delta_pool", "delta_reorder", "delta_resize", "from_blocked", "gate_map_resolution", "gate_parameters",
    "library_channel_block", "make_reference_evaluator", "map_union", "maxpool2d", "output_recompute_mask",
    "padded_channels", "resolve_pads", "run_blocked", "state_is_empty", "to_blocked",
]
