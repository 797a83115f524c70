"""What a benchmark is asked to run: the configurations, the options, what a frame callback sees."""
from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..graph_passes.conversion_context import DEFAULT_GATE, ConversionOptions


class BenchError(ValueError):
    """A benchmark cannot run as asked (model, clip or options); the message says what to change."""


@dataclass(frozen=True)
class GateConfig:
    """How the input gate decides (convert's gate, gate_block, gate_hard), or the inner thresholds (inner_gate, ...)."""

    rule: str = "pixel"  # the inner gate's default; the input gate's is INPUT_GATE
    block: Optional[int] = None  # None: convert's default
    hard: Optional[float] = None  # None: convert's default (a multiple of tau)

    @classmethod
    def parse(cls, text: str) -> "GateConfig":
        """pixel, block, block:K or block:K:HARD."""
        parts = text.strip().split(":")
        try:
            if parts[0] == "pixel" and len(parts) == 1:
                return cls()
            if parts[0] == "block" and len(parts) <= 3:
                block = int(parts[1]) if len(parts) > 1 else None
                hard = float(parts[2]) if len(parts) > 2 else None
                return cls("block", block, hard)
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"a gate is pixel, block, block:K or block:K:HARD, got {text!r}")

    def convert_kwargs(self, prefix: str = "") -> dict:
        """convert's keyword arguments: gate, gate_block, gate_hard (prefix "inner_": of the inner gate)."""
        kwargs = {f"{prefix}gate": self.rule}
        if self.block is not None:
            kwargs[f"{prefix}gate_block"] = self.block
        if self.hard is not None:
            kwargs[f"{prefix}gate_hard"] = self.hard
        return kwargs

    def label_as(self, name: str, default: str = "pixel") -> str:
        """"" for `default` with convert's k and bound, else " name=rule[k][/hard]"."""
        if self.rule == default and self.block is None and self.hard is None:
            return ""
        if self.rule == "pixel":
            return f" {name}=pixel"
        return f" {name}=block" + (f"{self.block}" if self.block else "") + (f"/{self.hard:g}" if self.hard is not None else "")

    @property
    def label(self) -> str:
        return self.label_as("gate", DEFAULT_GATE)


INPUT_GATE = GateConfig(DEFAULT_GATE)  # convert's input gate


@dataclass(frozen=True)
class DeltaConfig:
    """One converted configuration: the input gate and the inner threshold."""

    threshold: float
    inner_threshold: float
    gate: GateConfig = INPUT_GATE
    inner_gate: GateConfig = GateConfig()  # the change rule of the inner thresholds
    layout: str = ConversionOptions.layout  # convert's layout (nchw or blocked)
    fuse_sum: bool = ConversionOptions.fuse_sum  # convert's residual-Add fusion

    @property
    def rules(self) -> str:
        """The change rules, layout and fusion when not convert's defaults, e.g. "gate=pixel inner_gate=block2
        layout=blocked fuse_sum=off" ("" for the defaults)."""
        layout = f" layout={self.layout}" if self.layout != ConversionOptions.layout else ""
        fusion = "" if self.fuse_sum == ConversionOptions.fuse_sum else f" fuse_sum={'on' if self.fuse_sum else 'off'}"
        return f"{self.gate.label}{self.inner_gate.label_as('inner_gate')}{layout}{fusion}".strip()

    @property
    def label(self) -> str:
        return " ".join(filter(None, [f"tau={self.threshold:g} inner={self.inner_threshold:g}", self.rules]))


def parse_configs(thresholds: Sequence[float], inner_thresholds: Sequence[float],
                  gates: Sequence[GateConfig] = (INPUT_GATE,),
                  inner_gates: Sequence[GateConfig] = (GateConfig(),),
                  layouts: Sequence[str] = (ConversionOptions.layout,),
                  fuse_sums: Sequence[bool] = (ConversionOptions.fuse_sum,)) -> list[DeltaConfig]:
    return [DeltaConfig(float(t), float(i), g, ig, layout, fuse)
            for t, i, g, ig, layout, fuse in itertools.product(thresholds, inner_thresholds, gates, inner_gates, layouts,
                                                               fuse_sums)]


@dataclass
class BenchOptions:
    threads: int = 1
    warmup: int = 5
    detections: Optional[str] = None  # "yolo": decode boxes and compare them
    detections_output: Optional[str] = None  # which output holds the boxes (default: the first)
    conf_threshold: float = 0.25
    nms_iou: float = 0.45
    match_iou: float = 0.5
    objectness: bool = False
    all_nodes: bool = False
    dense_fraction: float = 0.5
    node_thresholds: Optional[dict] = None
    profile_frames: int = 20  # dense frames profiled for the Amdahl bound (0: no bound)
    profile_delta: bool = False  # also profile the converted models
    oracle: bool = False  # also run the numpy reference (pixel-granular rules) on the profiled frames
    dense_fallback: bool = True  # DeltaSession's fallback to the dense twin when almost everything changes
    stateless_runs: bool = True  # without the twin, DeltaSession's stateless runs when almost everything changes
    fallback_clock: bool = True  # with the twin, DeltaSession's clock: delta runs timed against the twin's
    maps_dir: Optional[Path] = None
    maps_frames: int = 3
    progress: bool = True
    interleave: int = 8  # frames per block: dense runs a block, then each converted model runs the same block


@dataclass
class FrameRecord:
    """What `on_frame` callbacks see for each frame (after the runs)."""

    index: int
    timed: bool
    frame: np.ndarray  # uint8 BGR as read
    input: np.ndarray  # the model input
    dense_outputs: list
    delta_outputs: list  # one list of outputs per configuration
    sessions: list  # the DeltaSessions, one per configuration
    change_maps: list = field(default_factory=list)  # per configuration: {node: map} of this frame, or None
                                                     # (captured only for frames in capture_maps_at / --maps)
