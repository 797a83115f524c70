"""What is measured for one converted configuration while the benchmark runs."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Optional

import onnx

from .options import DeltaConfig


@dataclass
class ConfigRun:
    """Everything measured for one converted configuration."""

    config: DeltaConfig
    model: onnx.ModelProto
    metadata: dict
    session: Any
    times: list = field(default_factory=list)
    fractions: dict = field(default_factory=lambda: collections.defaultdict(list))  # node -> per frame
    # per timed frame, the session's last_run().fractions (None: the dense twin ran), until _finish_fractions
    frame_fractions: list = field(default_factory=list)
    map_nodes: tuple = ()  # the order of those fractions
    flops_fraction_converted: list = field(default_factory=list)
    flops_fraction_all: list = field(default_factory=list)
    output_max_abs: dict = field(default_factory=lambda: collections.defaultdict(float))
    output_sum_mean_abs: dict = field(default_factory=lambda: collections.defaultdict(float))
    compared_frames: int = 0
    agreement: Any = None  # box F1 against dense (detections.BoxAgreement)
    margin_agreement: Any = None  # ... forgiving boxes near the threshold (detections.MarginBoxAgreement)
    dense_runs_seen: int = 0  # the session's count of dense-twin runs (its fallback), last seen
    dense_frames: int = 0  # timed frames that ran the dense twin
    stateless_runs_seen: int = 0  # the session's count of stateless runs, last seen
    stateless_frames: int = 0  # timed frames that ran without keeping state (stateless runs)
    state_bytes: int = 0  # the largest state seen
    mode_seen: Optional[str] = None  # the session's mode when state_bytes was last read
    replay_state: Optional[dict] = None  # the ops' state (past name -> array) before the replayed last frames
