"""`python -m deltaonnx calibrate MODEL --video CLIP`: per-node thresholds chosen on frames, proven on others.

Exact propagation leaves most of a detector's work in place; thresholds above 0 on inner layers remove most of
it, but a good value differs from layer to layer. This module finds them:

1. **Reference.** Dense ORT runs the search frames (a few contiguous segments of the calibration range) once;
   its outputs (and boxes, for detectors) are what every candidate is compared with. For detectors dense ORT
   runs every calibration frame and the segments grow until their scored frames hold `min_boxes` (1000) dense
   boxes, or cover the range (then the report says the clip has too few): a budget of box F1 0.99 cannot be
   seen on a couple of hundred boxes.
2. **Scales.** Thresholds are relative to each Delta node's input: the input gate (a node reading the model
   input) in fractions of the input's value range, every other node in multiples of the standard deviation of
   its input on the calibration frames (measured by exposing those tensors as outputs of the dense model).
   A node's threshold is `level x scale`, its level taken from a ladder (GATE_LEVELS, INNER_LEVELS).
3. **Search** (on the search frames, each candidate run through DeltaSession from an empty state, the model
   `convert` makes with the input gate's rule the written model uses: the block rule by default, `gate="pixel"`
   on request):
   the gate alone (bisection over its ladder), then one inner level for all nodes (bisection), then greedy
   sweeps front to back (as DeltaCNN and CBinfer do) raising one node (or the gate) a level at a time, kept
   when the budget still holds and the FLOP-weighted conv work redone drops. Work is measured, not estimated:
   `DeltaSession.stats()` per frame, weighted by each conv's FLOPs at this input size; convs kept dense count
   as fully redone. A candidate stops as soon as its box F1 cannot reach the budget even if every remaining
   dense box were found, and a greedy step as soon as its work cannot drop enough even if every node below the
   changed one redid nothing (the nodes above and beside it compute what the best did) or, after 16 scored
   frames, its gain over the best on the same frames falls short by a standard error (search.WorkFloor).
4. **Verification** on every calibration frame, dense and converted interleaved and timed (thread CPU time;
   dense answers kept from step 1 are reused, dense ORT then timed on every 8th frame). If the budget fails
   there, the search's last accepted steps are undone, then every level steps down (calibration.
   backoff_schedule), and it is verified again. Drift: agreement in the late half against the early half;
   when the late half alone fails, a periodic refresh (full recompute every K frames per stream,
   `PeriodicRefresh`) is tried before backing off (`refresh="auto"`).
5. **Held-out check** on frames the search never saw, with the same table: work redone, measured speedup,
   agreement, early against late.

The budget: for detectors (`detections="yolo"`) box F1 and mean IoU of matched boxes against dense; for any
model the mean absolute output error relative to the output's spread (standard deviation of the dense output),
the worst output counting. Beside the (strict) box F1 the report gives the margin F1 and dense ORT's own box
flicker between consecutive frames (see deltaonnx.detections). `calibrate()` is the library entry point;
deltaonnx.cli.calibrate is the command. Modules: options, preparation (the reference and the search frames),
candidates (the converted models, one conversion per gate threshold), search, verify, calibration (the whole
procedure), agreement (the budget and scoring), refresh, result, stamp.
"""
from __future__ import annotations

from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from .agreement import AgreementSummary, Budget, DetectionOptions, summarize
from .calibration import calibrate
from .levels import GATE_LEVELS, INNER_LEVELS, CalibrationError
from .model_nodes import NodeCalibration
from .options import CalibrationOptions
from .preparation import prepare_search
from .refresh import PeriodicRefresh
from .result import CalibrationResult, format_report, save_calibration, side_files
from .search import Evaluation, SearchSetup
from .stamp import CalibrationStamp
from .verify import RangeResult, measure_range

__all__ = ["AgreementSummary", "Budget", "CALIBRATION_METADATA_KEY", "CalibrationError", "CalibrationOptions",
           "CalibrationResult", "CalibrationStamp", "DetectionOptions", "Evaluation", "GATE_LEVELS", "INNER_LEVELS", "NodeCalibration",
           "PeriodicRefresh", "RangeResult", "SearchSetup", "calibrate", "format_report", "measure_range",
           "prepare_search", "save_calibration", "side_files", "summarize"]
