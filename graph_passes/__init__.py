"""The graph rewriting passes of deltaonnx, built on onnx_ir's pass infrastructure.

Each pass does one job; `conversion_pass_manager` composes them in order:
  normalize        reject converted/unsupported models, IR-3 weight inputs, names, shape inference, auto_pad
  fold_batchnorm   BatchNormalization folded into the preceding Conv
  plan             eligibility, cost model, change-map reach, thresholds -> a NodePlan per candidate node
  delta_rewrite    Conv/MaxPool -> DeltaConv/DeltaPool
  fuse_activation  the following activation -> DeltaConv's `activation`
  state_io         past/present state inputs/outputs and change-map outputs
  wire_maps        change maps carried from producer to consumer Delta ops
  metadata         the `deltaonnx` metadata entry
  finalize         opset import, IR version, topological order
and report.py renders the per-node summary (from the plans, or from a converted model's metadata).
"""
from __future__ import annotations

from .conversion_context import CONVERTED, DENSE, INELIGIBLE, ConversionContext, ConversionOptions, NodePlan
from .errors import ConversionError
from .metadata import conversion_metadata, read_conversion_metadata
from .normalize import METADATA_KEY
from .pipeline import conversion_pass_manager, planning_passes, rewriting_passes, run_passes
from .report import Report, ReportRow

__all__ = [
    "CONVERTED",
    "DENSE",
    "INELIGIBLE",
    "METADATA_KEY",
    "ConversionContext",
    "ConversionError",
    "ConversionOptions",
    "NodePlan",
    "Report",
    "ReportRow",
    "conversion_metadata",
    "conversion_pass_manager",
    "planning_passes",
    "read_conversion_metadata",
    "rewriting_passes",
    "run_passes",
]
