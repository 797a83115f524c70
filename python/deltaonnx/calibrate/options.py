"""What calibrate is asked for and what it returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..graph_passes.conversion_context import DEFAULT_GATE
from .agreement import Budget, DetectionOptions
from .levels import DEFAULT_MIN_BOXES


@dataclass
class CalibrationOptions:
    detections: Optional[DetectionOptions] = None  # None: the output-error budget only
    budget: Optional[Budget] = None  # default: F1/IoU for detectors, relative error otherwise
    search_frames: int = 40  # frames the search runs each candidate on (at least; see min_boxes)
    min_boxes: int = DEFAULT_MIN_BOXES  # detectors: search frames are added until they hold this many dense boxes
    search_segments: int = 2  # ... as this many contiguous segments spread over the calibration range
    scale_frames: int = 4  # frames the activation scales are measured on
    time_limit: float = 600.0  # CPU seconds for the whole calibration (search, verification, held-out)
    refresh: Union[str, int] = "auto"  # "auto": tried when verification fails; K: every K frames; 0: never
    threads: int = 1
    all_nodes: bool = False
    dense_fraction: float = 0.5
    # The input gate (convert's gate, gate_block, gate_hard; None: convert's defaults): the rule the search runs
    # its candidates with and the written model gates with (convert's default, the block rule; "pixel": rule 2).
    # gate_hard is in the input's units: the gate's ladder stops below it.
    gate: str = DEFAULT_GATE
    gate_block: Optional[int] = None
    gate_hard: Optional[float] = None
    warmup: int = 3  # untimed first frames of each range
    profile_frames: int = 10  # dense frames profiled for the ideal speedup (0: skip)
    progress: bool = True
