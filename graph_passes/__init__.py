"""The graph rewriting passes of deltaonnx, built on onnx_ir's pass infrastructure.

Each pass does one job; `conversion_pass_manager` composes them in order:
  normalize        reject converted/unsupported models, IR-3 weight inputs, names, shape inference, auto_pad
  fold_batchnorm   BatchNormalization folded into the preceding Conv
  plan             eligibility, cost model, change-map reach, thresholds -> a NodePlan per candidate node
  delta_rewrite    Conv/MaxPool -> DeltaConv/DeltaPool
  fuse_activation  the following activation -> DeltaConv's `activation`
  fuse_residual_sum a residual Add (+ its activation) -> DeltaConv's sum input Z (with map_z)
  state_io         past/present state inputs/outputs and change-map outputs
  wire_maps        change maps carried from producer to consumer Delta ops
  metadata         the `deltaonnx` metadata entry
  finalize         opset import, IR version, topological order
report.py renders the per-node summary (from the plans, or from a converted model's metadata). The transforms
of a converted model live here too: dense_twin.py (back to Conv/MaxPool, for DeltaSession's dense fallback) and
identical_frames.py (when a run provably changes nothing). protocol.py names what a converted model and its
readers agree on. This package imports nothing from the deltaonnx package around it.
"""
from __future__ import annotations

from .conversion_context import CONVERTED, DENSE, INELIGIBLE, ConversionContext, ConversionOptions, NodePlan
from .errors import ConversionError
from .metadata import ConversionMetadata, MetadataError, StateEntry, conversion_metadata, is_converted
from .pipeline import conversion_pass_manager, planning_passes, rewriting_passes, run_passes
from .protocol import CALIBRATION_METADATA_KEY, DOMAIN, METADATA_KEY, STATE_PREFIX
from .report import Report, ReportRow

__all__ = [
    "CALIBRATION_METADATA_KEY",
    "CONVERTED",
    "ConversionContext",
    "ConversionError",
    "ConversionMetadata",
    "ConversionOptions",
    "DENSE",
    "DOMAIN",
    "INELIGIBLE",
    "METADATA_KEY",
    "MetadataError",
    "NodePlan",
    "Report",
    "ReportRow",
    "STATE_PREFIX",
    "StateEntry",
    "conversion_metadata",
    "conversion_pass_manager",
    "is_converted",
    "planning_passes",
    "rewriting_passes",
    "run_passes",
]
