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
3. **Search** (on the search frames, each candidate run through DeltaSession from an empty state):
   the gate alone, then one inner level for all nodes (bisection), then greedy sweeps front to back (as DeltaCNN
   and CBinfer do) raising one node (or the gate) a level at a time, kept when the budget still holds and the
   FLOP-weighted conv work redone drops. Work is measured, not estimated: `DeltaSession.stats()` per frame,
   weighted by each conv's FLOPs at this input size; convs kept dense count as fully redone. A candidate stops
   as soon as its box F1 cannot reach the budget even if every remaining dense box were found.
4. **Verification** on every calibration frame, dense and converted interleaved and timed (thread CPU time). If
   the budget fails there, every level steps down and it is verified again. Drift: agreement in the late half
   against the early half; when the late half alone fails, a periodic refresh (full recompute every K frames
   per stream, `PeriodicRefresh`) is tried before stepping down (`refresh="auto"`).
5. **Held-out check** on frames the search never saw, with the same table: work redone, measured speedup,
   agreement, early against late.

The budget: for detectors (`detections="yolo"`) box F1 and mean IoU of matched boxes against dense; for any
model the mean absolute output error relative to the output's spread (standard deviation of the dense output),
the worst output counting. Beside the (strict) box F1 the report gives the margin F1 and dense ORT's own box
flicker between consecutive frames (see deltaonnx.detections). `calibrate()` is the library entry point;
`add_command` registers the CLI.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort

from . import __version__
from .detections import SCORE_MARGIN
from .graph_passes.conversion_context import DEFAULT_GATE
from .video import FrameSource, Preprocess, VideoError

# Threshold ladders. Gate: fraction of the model input's value range (0.02 of [0,1] pixels = 5/255).
GATE_LEVELS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)
# Inner nodes: multiples of the standard deviation of the node's input.
INNER_LEVELS = (0.0, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

CALIBRATION_METADATA_KEY = "deltaonnx.calibration"  # beside the converter's own `deltaonnx` entry
DELTA_METADATA_KEY = "deltaonnx"
DEFAULT_MIN_F1 = 0.99
DEFAULT_MIN_IOU = 0.95
DEFAULT_MAX_ERROR = 0.05  # 5% of the output's spread; compare the dense output's own frame-to-frame change
MIN_GAIN = 0.002  # a greedy step must remove at least 0.2% of the model's conv FLOPs to be worth its error
MIN_POTENTIAL = 0.002  # nodes redoing less than this share of the conv FLOPs are not searched one by one
MAX_CLIMB = 3  # levels a greedy step may climb looking for a gain
GATE_SHARE = 0.5  # share of the budget's slack the gate may spend before the inner nodes get theirs
FEW_BOXES = 20  # fewer dense boxes than this on the search frames make box F1 a coarse measure
# Dense boxes the search frames must hold (detectors): a budget of F1 0.99 is a dozen boxes wrong in 1000; on 240
# boxes it is two, and thresholds passing there failed on the whole range (issue 15)
DEFAULT_MIN_BOXES = 1000
MIN_HALF_BOXES = 5  # early/late box comparisons need this many dense boxes in each half
DRIFT_FACTOR = 1.25  # late-half error above this multiple of the early half's counts as drift


class CalibrationError(ValueError):
    """Calibration cannot run as asked (model, clip, ranges or budget); the message says what to change."""


# ----------------------------------------------------------------------------------------------------------
# budget and agreement
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionOptions:
    """How boxes are read from a YOLO-style output (see deltaonnx.detections.decode_yolo) and matched."""

    output: Optional[str] = None  # the output holding the boxes (default: the model's first)
    conf_threshold: float = 0.25
    nms_iou: float = 0.45
    match_iou: float = 0.5
    objectness: bool = False
    margin: float = SCORE_MARGIN  # of the margin box F1, reported beside the strict one


@dataclass(frozen=True)
class Budget:
    """What the converted model must keep against dense ORT. None = not checked."""

    min_f1: Optional[float] = None
    min_iou: Optional[float] = None
    max_error: Optional[float] = None

    def violations(self, agreement: "AgreementSummary") -> list[str]:
        found = []
        if self.min_f1 is not None and agreement.f1 is not None and agreement.f1 < self.min_f1:
            found.append(f"box F1 {agreement.f1:.3f} < {self.min_f1:g}")
        if self.min_iou is not None and agreement.mean_iou is not None and agreement.mean_iou < self.min_iou:
            found.append(f"mean IoU {agreement.mean_iou:.3f} < {self.min_iou:g}")
        if self.max_error is not None and not agreement.error <= self.max_error:
            found.append(f"relative output error {agreement.error:.2e} > {self.max_error:g}")
        return found

    def holds(self, agreement: "AgreementSummary") -> bool:
        return not self.violations(agreement)

    def share(self, part: float) -> "Budget":
        """The budget with only `part` of its slack (the distance from a perfect agreement) left."""
        def loss(bound: Optional[float]) -> Optional[float]:
            return None if bound is None else 1.0 - part * (1.0 - bound)

        return Budget(loss(self.min_f1), loss(self.min_iou),
                      None if self.max_error is None else part * self.max_error)

    def describe(self) -> str:
        parts = []
        if self.min_f1 is not None:
            parts.append(f"box F1 >= {self.min_f1:g}")
        if self.min_iou is not None:
            parts.append(f"mean IoU >= {self.min_iou:g}")
        if self.max_error is not None:
            parts.append(f"mean |error| / spread <= {self.max_error:g}")
        return ", ".join(parts) or "none"


@dataclass
class FrameScore:
    """One frame's agreement with dense: box counts (detectors) and per-output relative mean error."""

    errors: tuple[float, ...]
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    iou_sum: float = 0.0
    margin_true_positives: int = 0  # counted by detections.match_with_margin
    margin_false_positives: int = 0
    margin_false_negatives: int = 0
    reference_boxes: int = 0  # dense boxes above the threshold


@dataclass
class AgreementSummary:
    """Agreement over a set of frames. `error`: the worst output's mean |delta - dense| / spread."""

    frames: int
    error: float
    errors: dict[str, float]
    f1: Optional[float] = None
    mean_iou: Optional[float] = None
    reference_boxes: Optional[int] = None
    true_positives: Optional[int] = None
    false_positives: Optional[int] = None
    false_negatives: Optional[int] = None
    margin_f1: Optional[float] = None  # F1 forgiving boxes within the score margin (DetectionOptions.margin)

    def describe(self) -> str:
        text = f"err {self.error:.2e}"
        if self.f1 is not None:
            text = (f"F1 {self.f1:.3f} (margin {self.margin_f1:.3f}) IoU {self.mean_iou:.3f} ({self.true_positives} "
                    f"tp, {self.false_positives} fp, {self.false_negatives} fn of {self.reference_boxes}), " + text)
        return text


def _f1(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


def summarize(scores: Sequence[FrameScore], output_names: Sequence[str], detections: bool) -> AgreementSummary:
    """Add up per-frame scores (any subset of frames, e.g. the early or late half)."""
    count = len(scores)
    errors = {name: float(np.mean([s.errors[i] for s in scores])) if count else 0.0
              for i, name in enumerate(output_names)}
    summary = AgreementSummary(count, max(errors.values(), default=0.0), errors)
    if detections:
        tp = sum(s.true_positives for s in scores)
        fp = sum(s.false_positives for s in scores)
        fn = sum(s.false_negatives for s in scores)
        summary.f1 = _f1(tp, fp, fn)
        summary.margin_f1 = _f1(sum(s.margin_true_positives for s in scores),
                                sum(s.margin_false_positives for s in scores),
                                sum(s.margin_false_negatives for s in scores))
        if tp:
            summary.mean_iou = sum(s.iou_sum for s in scores) / tp
        else:  # nothing matched: perfect only if there was nothing to match
            summary.mean_iou = 1.0 if fp == fn == 0 else 0.0
        summary.reference_boxes, summary.true_positives = tp + fn, tp
        summary.false_positives, summary.false_negatives = fp, fn
    return summary


@dataclass
class _Reference:
    """Dense ORT's answer for one frame; `boxes` decoded down to conf - margin (`shown`: above conf)."""

    outputs: list
    boxes: Any = None
    shown: Any = None


class _Scorer:
    """Compares a candidate's outputs with dense ORT's for one frame."""

    def __init__(self, output_names: Sequence[str], spreads: Sequence[float], detections: Optional[DetectionOptions]):
        self.output_names = list(output_names)
        self.spreads = [s if s > 0 and math.isfinite(s) else 1.0 for s in spreads]
        self.detections = detections
        self.boxes_index = _boxes_output_index(self.output_names, detections) if detections is not None else 0

    def reference(self, outputs: list) -> _Reference:
        outputs = [np.array(o, copy=True) for o in outputs]  # DeltaSession/ORT buffers may be reused
        if not self.detections:
            return _Reference(outputs)
        boxes = self._decode(outputs[self.boxes_index])
        return _Reference(outputs, boxes, boxes.above(self.detections.conf_threshold))

    def _decode(self, output: np.ndarray):
        return decode_boxes(output, self.detections)

    def errors(self, dense_outputs: list, outputs: list) -> tuple[float, ...]:
        """Per output: mean |value - dense| / spread of the dense output."""
        errors = []
        for value, dense, spread in zip(outputs, dense_outputs, self.spreads):
            value = np.asarray(value, np.float64)
            difference = np.abs(value - dense)
            if not np.all(np.isfinite(difference)):  # NaN/Inf where dense has a number: the worst disagreement
                same = np.isnan(value) & np.isnan(dense)
                difference = np.where(same, 0.0, np.where(np.isfinite(difference), difference, np.inf))
            errors.append(float(difference.mean()) / spread if difference.size else 0.0)
        return tuple(errors)

    def score(self, reference: _Reference, outputs: list) -> FrameScore:
        score = FrameScore(self.errors(reference.outputs, outputs))
        if self.detections is not None:
            from .detections import match, match_with_margin

            d = self.detections
            boxes = self._decode(outputs[self.boxes_index])
            result = match(boxes.above(d.conf_threshold), reference.shown, d.match_iou)
            score.true_positives, score.false_positives = result.true_positives, result.false_positives
            score.false_negatives, score.iou_sum = result.false_negatives, float(result.ious.sum())
            score.reference_boxes = len(reference.shown)
            margin = match_with_margin(boxes, reference.boxes, d.conf_threshold, d.margin, d.match_iou)
            score.margin_true_positives, score.margin_false_positives = margin.true_positives, margin.false_positives
            score.margin_false_negatives = margin.false_negatives
        return score


def decode_boxes(output: np.ndarray, detections: DetectionOptions):
    """The boxes of one frame's output, decoded down to conf - margin."""
    from .detections import decode_with_margin

    return decode_with_margin(output, detections.conf_threshold, detections.margin,
                              iou_threshold=detections.nms_iou, objectness=detections.objectness)[0]


def dense_flicker(shown: Sequence, match_iou: float) -> Optional[float]:
    """1 - box F1 of each dense frame's boxes (above the threshold) against the previous frame's: the
    frame-to-frame noise of dense ORT itself. None with fewer than two frames."""
    from .detections import flicker

    if len(shown) < 2:
        return None
    return 1.0 - flicker(shown, match_iou).f1


# ----------------------------------------------------------------------------------------------------------
# refresh
# ----------------------------------------------------------------------------------------------------------


class PeriodicRefresh:
    """Runs a DeltaSession with a full recompute every `every` frames of each stream (0: never).

    The refresh is `session.reset(stream)` before the run: the stream starts again from empty state, so that
    frame is computed densely and exactly, and any error the thresholds let accumulate is gone.

        runner = PeriodicRefresh(deltaonnx.DeltaSession("model.delta.onnx"), every=50)
        outputs = runner.run(None, {"images": frame}, stream="camera-1")
    """

    def __init__(self, session, every: int):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"PeriodicRefresh: every must be an int >= 0, got {every!r}")
        self.session, self.every = session, every
        self._frames: dict[Hashable, int] = {}  # runs per stream since its last reset
        self._lock = threading.Lock()

    @classmethod
    def from_model(cls, session) -> "PeriodicRefresh":
        """The refresh period the calibration stored in the model's metadata (0 when none)."""
        text = session.inference_session.get_modelmeta().custom_metadata_map.get(CALIBRATION_METADATA_KEY)
        every = int(json.loads(text).get("refresh", 0)) if text else 0
        return cls(session, every)

    def run(self, output_names, input_feed, run_options=None, *, stream: Hashable = "default") -> list:
        with self._lock:  # streams may run from several threads
            count = self._frames.get(stream, 0)
            self._frames[stream] = count + 1
        if self.every and count and count % self.every == 0:
            self.session.reset(stream)
        return self.session.run(output_names, input_feed, run_options, stream=stream)

    def reset(self, stream: Hashable | None = None) -> None:
        self.session.reset(stream)
        with self._lock:
            if stream is None:
                self._frames.clear()
            else:
                self._frames.pop(stream, None)


# ----------------------------------------------------------------------------------------------------------
# the model: nodes, scales, FLOPs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class NodeCalibration:
    """One Delta node: what it is, its scale and the level chosen for it."""

    name: str  # the Delta node (DeltaConv_3)
    source: str  # the Conv/MaxPool it replaces, the key of the thresholds file
    op: str
    gate: bool  # reads the model input
    scale: float  # input range (gate) or input standard deviation (inner)
    flops: float  # conv FLOPs per frame at the calibration size (0 for pools)
    level: int = 0
    tau: float = 0.0
    fraction: Optional[float] = None  # mean recomputed fraction on the calibration frames

    @property
    def factor(self) -> float:
        return (GATE_LEVELS if self.gate else INNER_LEVELS)[self.level]


def _metadata_of(proto: onnx.ModelProto, key: str = DELTA_METADATA_KEY) -> Optional[dict]:
    for prop in proto.metadata_props:
        if prop.key == key:
            return json.loads(prop.value)
    return None


def _gate_sources(original: onnx.ModelProto, sources: Iterable[str]) -> set[str]:
    """Which source nodes read a model input (possibly through layout-only ops): the converter's own rule."""
    import onnx_ir as ir

    from .graph_passes.plan import reads_model_input

    wanted = set(sources)
    model_ir = ir.serde.deserialize_model(original)
    return {node.name for node in model_ir.graph if node.name in wanted and reads_model_input(node)}


def _measure_scales(original: onnx.ModelProto, tensors: dict[str, str], gate_tensors: set[str], feeds: list[dict],
                    threads: int) -> dict[str, float]:
    """Scale of each tensor on dense ORT: value range for gate inputs, standard deviation for the others."""
    from .bench import session_options

    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    graph_inputs = {i.name for i in probe.graph.input}
    declared = {o.name for o in probe.graph.output}
    for tensor in dict.fromkeys(tensors.values()):
        if tensor not in declared and tensor not in graph_inputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
            declared.add(tensor)
    session = ort.InferenceSession(probe.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    fetched = [t for t in dict.fromkeys(tensors.values()) if t not in graph_inputs]
    moments: dict[str, list] = {t: [] for t in dict.fromkeys(tensors.values())}
    for feed in feeds:
        values = dict(zip(fetched, session.run(fetched, feed))) if fetched else {}
        values.update({name: feed[name] for name in graph_inputs if name in feed})
        for tensor in moments:
            moments[tensor].append(np.asarray(values[tensor], np.float64))
    scales = {}
    for tensor, arrays in moments.items():
        stacked = np.concatenate([a.ravel() for a in arrays])
        stacked = stacked[np.isfinite(stacked)]
        if stacked.size == 0:
            scale = 1.0
        elif tensor in gate_tensors:
            scale = float(stacked.max() - stacked.min())
        else:
            scale = float(stacked.std())
        scales[tensor] = scale if scale > 0 else 1.0  # a constant input: its threshold never matters
    return scales


def _work_redone(fractions: dict[str, float], nodes: Sequence[NodeCalibration], dense_flops: float,
                 total_flops: float) -> float:
    """FLOP-weighted share of the model's conv work redone: converted convs by their recomputed fraction,
    convs kept dense in full."""
    if total_flops <= 0:
        return float(np.mean(list(fractions.values()))) if fractions else 1.0
    redone = dense_flops + sum(n.flops * fractions.get(n.name, 1.0) for n in nodes)
    return redone / total_flops


# ----------------------------------------------------------------------------------------------------------
# evaluating candidates on the search frames
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    work: float  # FLOP-weighted share of conv work redone (mean over scored frames)
    agreement: AgreementSummary
    within_budget: bool
    fractions: dict[str, float]
    cpu_seconds: float
    stopped_early: bool = False  # the box F1 budget was out of reach before the last search frame


def _f1_out_of_reach(tp: int, fp: int, fn: int, remaining_boxes: int, min_f1: Optional[float]) -> bool:
    """Whether no outcome on the frames still to run can lift the box F1 to min_f1: at best every one of the
    remaining dense boxes is found and nothing else is (F1 only falls with more false positives/negatives)."""
    if min_f1 is None:
        return False
    return _f1(tp + remaining_boxes, fp, fn) < min_f1


class _CandidateRunner:
    """Runs a threshold assignment on the search segments: one converted model whose Delta nodes' `threshold`
    attributes are rewritten per candidate (nothing else depends on them), a fresh DeltaSession each time."""

    def __init__(self, converted: onnx.ModelProto, nodes: Sequence[NodeCalibration], segments: list[list[tuple]],
                 input_name: str, scorer: _Scorer, budget: Budget, dense_flops: float, total_flops: float,
                 threads: int):
        self.proto = onnx.ModelProto()
        self.proto.CopyFrom(converted)
        self.attributes = {}
        for node in self.proto.graph.node:
            for attribute in node.attribute:
                if attribute.name == "threshold":
                    self.attributes[node.name] = attribute
        missing = [n.name for n in nodes if n.name not in self.attributes]
        if missing:
            raise CalibrationError(f"internal: Delta nodes without a threshold attribute: {missing}")
        self.nodes, self.segments, self.input_name = list(nodes), segments, input_name
        self.scorer, self.budget, self.threads = scorer, budget, threads
        self.dense_flops, self.total_flops = dense_flops, total_flops
        self.evaluations = 0
        self.frames_skipped = 0  # search frames not run because the candidate had already failed
        self.frame_seconds: list[float] = []

    def model_with(self, taus: dict[str, float]) -> bytes:
        for name, tau in taus.items():
            self.attributes[name].f = float(tau)
        return self.proto.SerializeToString()

    def evaluate(self, taus: dict[str, float]) -> Evaluation:
        from .bench import session_options
        from .session import DeltaSession

        started = time.process_time()
        session = DeltaSession(self.model_with(taus), session_options(self.threads), dense_fallback=False)
        scores, works = [], []
        fraction_sums: dict[str, float] = {}
        # a failing candidate is dropped as soon as the box F1 budget is out of reach (the search's many
        # rejected steps would otherwise run every search frame)
        remaining = self.scored_boxes()
        tp = fp = fn = 0
        stopped_early = False
        for index, segment in enumerate(self.segments):
            if stopped_early:
                self.frames_skipped += len(segment)
                continue
            stream = f"segment-{index}"
            for position, (feed, reference) in enumerate(segment):
                if _f1_out_of_reach(tp, fp, fn, remaining, self.budget.min_f1):
                    stopped_early = True
                    self.frames_skipped += len(segment) - position
                    break
                run_started = time.thread_time()
                outputs = session.run(None, feed, stream=stream)
                self.frame_seconds.append(time.thread_time() - run_started)
                if position == 0:  # empty state: computed densely, exact; says nothing about the thresholds
                    continue
                fractions = {name: entry["fraction"] for name, entry in session.stats(stream)["nodes"].items()}
                for name, value in fractions.items():
                    fraction_sums[name] = fraction_sums.get(name, 0.0) + value
                works.append(_work_redone(fractions, self.nodes, self.dense_flops, self.total_flops))
                score = self.scorer.score(reference, outputs)
                scores.append(score)
                tp, fp, fn = tp + score.true_positives, fp + score.false_positives, fn + score.false_negatives
                remaining -= score.reference_boxes
        self.evaluations += 1
        agreement = summarize(scores, self.scorer.output_names, self.scorer.detections is not None)
        count = max(len(works), 1)
        return Evaluation(float(np.mean(works)) if works else 1.0, agreement,
                          not stopped_early and self.budget.holds(agreement),
                          {k: v / count for k, v in fraction_sums.items()}, time.process_time() - started,
                          stopped_early)

    def scored_boxes(self) -> int:
        """Dense boxes above the threshold on the scored search frames (each segment's first is not scored)."""
        return sum(len(reference.shown) for segment in self.segments for _, reference in segment[1:]
                   if reference.shown is not None)

    def delta_frame_seconds(self) -> float:
        recent = self.frame_seconds[-200:]
        return float(np.mean(recent)) if recent else 0.0


# ----------------------------------------------------------------------------------------------------------
# the search
# ----------------------------------------------------------------------------------------------------------


class _Search:
    """Levels per node: gate first, one inner level for all, then greedy sweeps front to back."""

    def __init__(self, setup: "SearchSetup", over_time: Callable[[], bool], log: Callable[[str], None]):
        self.setup, self.nodes, self.runner = setup, setup.nodes, setup.runner
        self.over_time, self.log = over_time, log
        self.cache: dict[tuple, Evaluation] = {}
        self.history: list[dict] = []
        self.stopped_by_time = False

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        return self.setup.taus(levels)

    def evaluate(self, levels: dict[str, int], phase: str, change: str, force: bool = False) -> Optional[Evaluation]:
        key = tuple(levels[n.name] for n in self.nodes)
        if key in self.cache:
            return self.cache[key]
        if not force and self.over_time():
            self.stopped_by_time = True
            return None
        evaluation = self.setup.evaluate(levels)
        self.cache[key] = evaluation
        self.history.append({"phase": phase, "change": change, "work": evaluation.work,
                             "within_budget": evaluation.within_budget, "agreement": asdict(evaluation.agreement),
                             "cpu_seconds": evaluation.cpu_seconds, "stopped_early": evaluation.stopped_early})
        verdict = "ok " if evaluation.within_budget else ("out " if evaluation.stopped_early else "over")
        self.log(f"{phase:7s} {change:40s} work {100 * evaluation.work:5.1f}%  {verdict} "
                 f"{evaluation.agreement.describe()}")
        return evaluation

    def run(self) -> tuple[dict[str, int], Evaluation]:
        gates = [n for n in self.nodes if n.gate]
        inner = [n for n in self.nodes if not n.gate]
        levels = {n.name: 0 for n in self.nodes}
        best = self.evaluate(levels, "exact", "all thresholds 0", force=True)  # the baseline, always measured

        def with_levels(base: dict[str, int], group: Sequence[NodeCalibration], level: int) -> dict[str, int]:
            trial = dict(base)
            trial.update({n.name: level for n in group})
            return trial

        # 1. the input gate, alone (inner nodes exact): ascending while it spends at most GATE_SHARE of the
        # budget's slack. Given all of it, the gate can take the whole budget for little work (on a detector
        # whose boxes sit near the threshold, gate 0.05 kept F1 0.991 at 89% of the work, leaving the inner
        # nodes, which hold most of the work, nothing); the sweeps may raise it further with what is left.
        if gates:
            gate_budget = self.setup.budget.share(GATE_SHARE)
            for level in range(1, len(GATE_LEVELS)):
                trial = with_levels(levels, gates, level)
                result = self.evaluate(trial, "gate", f"gate {GATE_LEVELS[level]:g} x range")
                if result is None or not result.within_budget or not gate_budget.holds(result.agreement):
                    break
                levels, best = trial, result
        # 2. one level for every inner node: bisection between a passing and an unknown level
        if inner:
            low, high = 0, len(INNER_LEVELS) - 1
            while low < high:
                middle = (low + high + 1) // 2
                trial = with_levels(levels, inner, middle)
                result = self.evaluate(trial, "uniform", f"inner {INNER_LEVELS[middle]:g} x std")
                if result is None:
                    break
                if result.within_budget:
                    low, levels, best = middle, trial, result
                else:
                    high = middle - 1
        # 3. greedy sweeps front to back: one group a level up, kept if the budget holds and work drops
        groups: list[tuple[str, list[NodeCalibration]]] = []
        if gates:
            groups.append(("gate", gates))
        groups += [(n.name, [n]) for n in inner]
        sweep = 0
        while not self.stopped_by_time:
            sweep += 1
            accepted = 0
            for label, group in groups:
                first = group[0]
                ladder = GATE_LEVELS if first.gate else INNER_LEVELS
                if levels[first.name] + 1 >= len(ladder):
                    continue
                if not first.gate:
                    potential = first.flops * best.fractions.get(first.name, 1.0) / max(self.runner.total_flops, 1.0)
                    if first.flops and potential < MIN_POTENTIAL:
                        continue
                    if not first.flops:  # pools: no conv FLOPs of their own; they follow the uniform level
                        continue
                # A step may gain nothing yet (an op above its dense fraction stays dense): climb up to
                # MAX_CLIMB levels while the budget holds, keeping the first that pays.
                current = levels[first.name]
                for level in range(current + 1, min(current + 1 + MAX_CLIMB, len(ladder))):
                    trial = with_levels(levels, group, level)
                    result = self.evaluate(trial, f"sweep {sweep}", f"{label} -> {ladder[level]:g}")
                    if result is None or not result.within_budget:
                        break
                    if result.work <= best.work - MIN_GAIN:
                        levels, best = trial, result
                        accepted += 1
                        break
                if self.stopped_by_time:
                    break
            if accepted == 0:
                break
        return levels, best


# ----------------------------------------------------------------------------------------------------------
# measuring a whole range: dense and converted interleaved, timed
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RangeResult:
    """A converted model against dense ORT over a frame range."""

    start: int
    stop: int
    frames: int
    timed_frames: int
    refresh: int
    dense_ms: float  # thread CPU time per frame
    delta_ms: float
    speedup: float
    wall_speedup: float
    work: float  # FLOP-weighted conv work redone, mean over frames after the first
    work_p90: float
    agreement: AgreementSummary
    early: AgreementSummary
    late: AgreementSummary
    within_budget: bool
    violations: list[str]
    drift: bool
    ideal_speedup: Optional[float] = None
    dense_jitter: Optional[float] = None  # dense output's own frame-to-frame change, in the error's units
    dense_flicker: Optional[float] = None  # detectors: 1 - box F1 of consecutive dense frames (dense_flicker())


    def label(self) -> str:
        return f"{self.start}-{self.stop - 1}"


def _frames_of(source: FrameSource, start: int, stop: int) -> Iterable[np.ndarray]:
    from .video import read_frames

    return read_frames(source, count=stop - start, start=start)


def measure_range(original_bytes: bytes, converted: Union[bytes, onnx.ModelProto], source: FrameSource, start: int,
                  stop: int, preprocess: Preprocess, input_name: str, scorer: _Scorer, budget: Budget,
                  nodes: Sequence[NodeCalibration], dense_flops: float, total_flops: float, *, refresh: int = 0,
                  threads: int = 1, warmup: int = 3, progress=None, conv_work_share: Optional[float] = None,
                  fraction_sums: Optional[dict] = None) -> RangeResult:
    """Run dense ORT and the converted model on frames [start, stop) of `source`, interleaved (the order
    alternates per frame), timing each run with the calling thread's CPU time (ORT runs a one-thread session on
    the caller's thread, so other load on the machine does not count)."""
    from .bench import session_options
    from .session import DeltaSession

    options = session_options(threads)
    dense = ort.InferenceSession(original_bytes, options, providers=["CPUExecutionProvider"])
    model_bytes = converted if isinstance(converted, bytes) else converted.SerializeToString()
    runner = PeriodicRefresh(DeltaSession(model_bytes, options, dense_fallback=False), refresh)
    thread_clock = time.thread_time if threads == 1 else time.process_time
    dense_cpu = delta_cpu = dense_wall = delta_wall = 0.0
    timed = 0
    scores: list[FrameScore] = []
    works: list[float] = []
    jitters: list[float] = []
    previous_dense = None
    dense_boxes: list = []  # the flicker's
    count = 0
    for index, frame in enumerate(_frames_of(source, start, stop)):
        feed = {input_name: preprocess(frame)}
        results = {}
        for which in (("dense", "delta") if index % 2 == 0 else ("delta", "dense")):
            wall, cpu = time.perf_counter(), thread_clock()
            if which == "dense":
                results[which] = dense.run(None, feed)
            else:
                results[which] = runner.run(None, feed)
            results[which + "_cpu"] = thread_clock() - cpu
            results[which + "_wall"] = time.perf_counter() - wall
        if index >= warmup:
            dense_cpu += results["dense_cpu"]
            delta_cpu += results["delta_cpu"]
            dense_wall += results["dense_wall"]
            delta_wall += results["delta_wall"]
            timed += 1
        if index > 0:
            fractions = {name: entry["fraction"] for name, entry in runner.session.stats()["nodes"].items()}
            works.append(_work_redone(fractions, nodes, dense_flops, total_flops))
            if fraction_sums is not None:
                for name, value in fractions.items():
                    fraction_sums[name] = fraction_sums.get(name, 0.0) + value
        reference = scorer.reference(results["dense"])
        scores.append(scorer.score(reference, results["delta"]))
        if reference.shown is not None:
            dense_boxes.append(reference.shown)
        if previous_dense is not None and all(a.shape == b.shape for a, b in zip(previous_dense, reference.outputs)):
            jitters.append(max(scorer.errors(previous_dense, reference.outputs), default=0.0))
        previous_dense = reference.outputs
        count += 1
        if progress is not None:
            progress.update(count, f"speedup {dense_cpu / delta_cpu:.2f}x" if delta_cpu else "warm-up")
    if progress is not None:
        progress.close()
    if count == 0:
        raise CalibrationError(f"no frames in {start}:{stop} of the clip")
    if fraction_sums is not None:
        fraction_sums["\0frames"] = len(works)
    detections = scorer.detections is not None
    whole = summarize(scores, scorer.output_names, detections)
    half = count // 2
    early = summarize(scores[:half], scorer.output_names, detections)
    late = summarize(scores[half:], scorer.output_names, detections)
    violations = budget.violations(whole)
    work = float(np.mean(works)) if works else 1.0
    ideal = None
    if conv_work_share is not None:
        ideal = 1.0 / ((1.0 - conv_work_share) + conv_work_share * work)
    return RangeResult(
        start=start, stop=start + count, frames=count, timed_frames=timed, refresh=refresh,
        dense_ms=1000 * dense_cpu / max(timed, 1), delta_ms=1000 * delta_cpu / max(timed, 1),
        speedup=dense_cpu / delta_cpu if delta_cpu else float("nan"),
        wall_speedup=dense_wall / delta_wall if delta_wall else float("nan"),
        work=work, work_p90=float(np.percentile(works, 90)) if works else 1.0,
        agreement=whole, early=early, late=late, within_budget=not violations, violations=violations,
        drift=_drifted(early, late, budget), ideal_speedup=ideal,
        dense_jitter=float(np.mean(jitters)) if jitters else None,
        dense_flicker=dense_flicker(dense_boxes, scorer.detections.match_iou) if detections else None)


def _enough_boxes(summary: AgreementSummary) -> bool:
    """Whether a half range's box F1 means anything (always true for the output-error budget)."""
    return summary.reference_boxes is None or summary.reference_boxes >= MIN_HALF_BOXES


def _drifted(early: AgreementSummary, late: AgreementSummary, budget: Budget) -> bool:
    """The late half breaks the budget while the early half keeps it, or agreement got clearly worse: the
    error grew by DRIFT_FACTOR (and matters: above half the error budget), or box F1 / IoU fell by 0.02.
    Box criteria count only when both halves hold MIN_HALF_BOXES dense boxes."""
    comparable = _enough_boxes(early) and _enough_boxes(late)
    if comparable and budget.holds(early) and not budget.holds(late):
        return True
    grew = early.error > 0 and late.error > DRIFT_FACTOR * early.error and (
        budget.max_error is None or late.error > budget.max_error / 2)
    boxes = comparable and early.f1 is not None and late.f1 is not None and (
        late.f1 < early.f1 - 0.02 or (late.mean_iou or 0.0) < (early.mean_iou or 0.0) - 0.02)
    return grew or boxes


def _late_half_holds(result: RangeResult, budget: Budget) -> bool:
    return not _enough_boxes(result.late) or budget.holds(result.late)


# ----------------------------------------------------------------------------------------------------------
# calibrate
# ----------------------------------------------------------------------------------------------------------


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
    # The input gate of the written model (convert's gate, gate_block, gate_hard; None: convert's defaults).
    # The search raises per-node thresholds under the pixel rule; the final model, measured on the whole
    # range, gates with this one (convert's default, the block rule).
    gate: str = DEFAULT_GATE
    gate_block: Optional[int] = None
    gate_hard: Optional[float] = None
    warmup: int = 3  # untimed first frames of each range
    profile_frames: int = 10  # dense frames profiled for the ideal speedup (0: skip)
    progress: bool = True


@dataclass
class CalibrationResult:
    model: onnx.ModelProto  # the converted model with the calibrated thresholds
    thresholds: dict[str, float]  # source node name -> tau (the format of `convert --thresholds`)
    refresh: int
    nodes: list[NodeCalibration]
    budget: Budget
    calibration: RangeResult
    heldout: Optional[RangeResult]
    search: dict
    settings: dict

    def as_dict(self) -> dict:
        from .bench import json_ready

        return json_ready({
            "format": 1, "deltaonnx_version": __version__, "budget": asdict(self.budget), "refresh": self.refresh,
            "thresholds": self.thresholds, "settings": self.settings,
            "nodes": [asdict(n) | {"factor": n.factor} for n in self.nodes],
            "calibration": asdict(self.calibration), "heldout": asdict(self.heldout) if self.heldout else None,
            "search": self.search,
        })

    def report(self) -> str:
        return format_report(self)


@dataclass
class SearchSetup:
    """The calibration frames made ready for the search: the dense model's answers on the search segments,
    the converted model (all thresholds 0) and its Delta nodes with their scales and FLOPs."""

    original: onnx.ModelProto
    dense_bytes: bytes
    input_name: str
    preprocess: Preprocess
    start: int
    stop: int  # one past the last calibration frame the clip really has
    segment_length: int
    segment_starts: list[int]
    nodes: list[NodeCalibration]
    converted_entries: list[dict]
    scorer: _Scorer
    budget: Budget
    runner: _CandidateRunner
    dense_flops: float  # conv FLOPs of the convs kept dense
    total_flops: float
    dense_frame_seconds: float
    profile_feeds: list[dict]
    search_boxes: Optional[int] = None  # dense boxes on the scored search frames (detectors)
    range_boxes: Optional[int] = None  # ... on the whole calibration range, when counted (min_boxes > 0)

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        """Delta node -> tau for a level per node."""
        return {n.name: (GATE_LEVELS if n.gate else INNER_LEVELS)[levels[n.name]] * n.scale for n in self.nodes}

    def uniform_levels(self, inner: int, gate: int = 0) -> dict[str, int]:
        return {n.name: gate if n.gate else inner for n in self.nodes}

    def evaluate(self, levels: dict[str, int]) -> Evaluation:
        """Run the search frames with these levels: work redone and agreement against dense."""
        return self.runner.evaluate(self.taus(levels))


def _resolve_budget(options: "CalibrationOptions") -> Budget:
    budget = options.budget or (Budget(DEFAULT_MIN_F1, DEFAULT_MIN_IOU, None) if options.detections
                                else Budget(None, None, DEFAULT_MAX_ERROR))
    if budget.min_f1 is None and budget.min_iou is None and budget.max_error is None:
        raise CalibrationError("the budget checks nothing: give a box F1, a mean IoU or an output error bound")
    if (budget.min_f1 is not None or budget.min_iou is not None) and options.detections is None:
        raise CalibrationError("a box F1 / IoU budget needs detections (detections='yolo' / --detections yolo)")
    return budget


def prepare_search(model, source: FrameSource, *, frames: tuple[int, int] = (0, 200),
                   preprocess: Optional[Preprocess] = None, options: Optional["CalibrationOptions"] = None,
                   log: Optional[Callable[[str], None]] = None) -> SearchSetup:
    """Read the search segments of frames [A, B) of `source`, run dense ORT on them, convert `model` with every
    threshold 0 and measure each Delta node's scale and FLOPs (see the module docstring)."""
    from .bench import conv_flops, image_input, is_converted, session_options
    from .convert import convert_with_report, load_model

    options = options or CalibrationOptions()
    log = log or (lambda message: None)
    _check_options(options, frames, None)
    original = load_model(model)
    if is_converted(original):
        raise CalibrationError("the model is already converted; calibrate the dense original")
    try:
        input_name, input_shape = image_input(original)
    except ValueError as error:  # bench's BenchError: not exactly one image input
        raise CalibrationError(str(error)) from error
    preprocess = preprocess or Preprocess.for_model_input(input_shape)
    budget = _resolve_budget(options)

    output_names = [o.name for o in original.graph.output]
    dense_bytes = original.SerializeToString()
    dense = ort.InferenceSession(dense_bytes, session_options(options.threads), providers=["CPUExecutionProvider"])
    frames_read = _read_search_frames(source, frames, preprocess, input_name, dense, options)
    start, stop = frames[0], frames_read.stop
    segment_length, segment_starts = frames_read.segment_length, frames_read.segment_starts
    feeds, dense_outputs = frames_read.feeds, frames_read.dense_outputs
    log(f"calibration frames {start}-{stop - 1}; search on {len(segment_starts)} segment(s) of {segment_length} "
        f"frames starting at {', '.join(map(str, segment_starts))}")
    if frames_read.range_boxes is not None:
        log(f"{frames_read.range_boxes} dense boxes on the calibration frames, {frames_read.search_boxes} on the "
            f"scored search frames (wanted >= {options.min_boxes})"
            + ("" if frames_read.search_boxes >= options.min_boxes else ": the clip has too few; the search runs on "
               "the whole calibration range"))

    spreads = [float(np.std(np.concatenate([np.asarray(o[i], np.float64).ravel()
                                            for segment in dense_outputs for o in segment])))
               for i in range(len(output_names))]
    scorer = _Scorer(output_names, spreads, options.detections)
    segments = [[(feed, scorer.reference(outputs)) for feed, outputs in zip(fs, os)]
                for fs, os in zip(feeds, dense_outputs)]

    # the converted model (all thresholds 0) and its nodes
    base, _ = convert_with_report(original, all_nodes=options.all_nodes, dense_fraction=options.dense_fraction,
                                  keep_references=True)  # the search raises thresholds in this model
    metadata = _metadata_of(base) or {}
    converted_entries = [e for e in metadata.get("nodes", []) if e.get("decision") == "converted"]
    unnamed = [e["name"] for e in converted_entries if not e.get("source")]
    if unnamed:
        raise CalibrationError(f"{len(unnamed)} converted node(s) have no name in the model (e.g. the source of "
                               f"{unnamed[0]}); per-node thresholds need named Conv/MaxPool nodes")
    flops = conv_flops(original, feeds[0][0])
    converted_conv_sources = {e["source"] for e in converted_entries if e.get("source_op") == "Conv"}
    total_flops = float(sum(flops.values()))
    dense_flops = float(sum(f for name, f in flops.items() if name not in converted_conv_sources))
    gate_sources = _gate_sources(original, (e["source"] for e in converted_entries))
    source_inputs = {n.name: n.input[0] for n in original.graph.node if n.name and n.input}
    tensors = {e["name"]: source_inputs[e["source"]] for e in converted_entries}
    gate_tensors = {tensors[e["name"]] for e in converted_entries if e["source"] in gate_sources}
    scale_count = max(1, options.scale_frames)
    scale_feeds = [segment[k] for k in range(segment_length) for segment in feeds][:scale_count]
    scales = _measure_scales(original, tensors, gate_tensors, scale_feeds, options.threads)
    nodes = [NodeCalibration(name=e["name"], source=e["source"], op=e.get("op", "?"), gate=e["source"] in gate_sources,
                             scale=scales[tensors[e["name"]]],
                             flops=float(flops.get(e["source"], 0.0)) if e.get("source_op") == "Conv" else 0.0)
             for e in converted_entries]
    runner = _CandidateRunner(base, nodes, segments, input_name, scorer, budget, dense_flops, total_flops,
                              options.threads)
    profile_feeds = [f for segment in feeds for f in segment][:max(options.profile_frames, 0) + 1]
    search_boxes = None
    if options.detections is not None:
        search_boxes = runner.scored_boxes()
        if search_boxes < FEW_BOXES:
            log(f"only {search_boxes} dense boxes on the search frames: box F1 is measured coarsely there "
                "(more --search-frames or a lower --conf help); the verification on all frames decides")
    return SearchSetup(original, dense_bytes, input_name, preprocess, start, stop, segment_length, segment_starts,
                       nodes, converted_entries, scorer, budget, runner, dense_flops, total_flops,
                       frames_read.dense_frame_seconds, profile_feeds, search_boxes, frames_read.range_boxes)


@dataclass
class _SearchFrames:
    """The search segments as model inputs with dense ORT's outputs on them."""

    stop: int  # one past the last calibration frame the clip really has
    segment_length: int
    segment_starts: list[int]
    feeds: list[list[dict]]
    dense_outputs: list[list[list]]
    dense_frame_seconds: float
    range_boxes: Optional[int] = None  # dense boxes on the whole calibration range (when counted)
    search_boxes: Optional[int] = None  # ... on the scored search frames


def _read_search_frames(source: FrameSource, frames: tuple[int, int], preprocess: Preprocess, input_name: str,
                        dense, options: "CalibrationOptions") -> _SearchFrames:
    """Detectors with a box minimum: dense ORT runs every calibration frame, counting its boxes, and the search
    segments grow until their scored frames hold options.min_boxes (or cover the range). Otherwise only the
    options.search_frames frames of the segments are read (re-planned once if the clip is shorter)."""
    start, stop = frames
    if options.detections is not None and options.min_boxes > 0:
        try:
            feeds = [{input_name: preprocess(frame)} for frame in _frames_of(source, start, stop)]
        except VideoError as error:
            raise CalibrationError(str(error)) from error
        _check_range_length(start, stop, len(feeds))
        dense_started = time.thread_time()
        outputs = [dense.run(None, feed) for feed in feeds]
        dense_frame_seconds = (time.thread_time() - dense_started) / len(feeds)
        boxes_index = _boxes_output_index([o.name for o in dense.get_outputs()], options.detections)
        counts = [len(decode_boxes(o[boxes_index], options.detections).above(options.detections.conf_threshold))
                  for o in outputs]
        length, offsets, search_boxes = _search_plan(counts, options.search_frames, options.search_segments,
                                                     options.min_boxes)
        return _SearchFrames(start + len(feeds), length, [start + o for o in offsets],
                             [feeds[o:o + length] for o in offsets], [outputs[o:o + length] for o in offsets],
                             dense_frame_seconds, sum(counts), search_boxes)
    for _ in range(2):
        segment_length, segment_starts = _search_segments(start, stop, options.search_frames, options.search_segments)
        wanted = {s + k: (i, k) for i, s in enumerate(segment_starts) for k in range(segment_length)}
        segment_feeds: list[list[Optional[dict]]] = [[None] * segment_length for _ in segment_starts]
        seen = 0
        try:
            for index, frame in enumerate(_frames_of(source, start, stop), start=start):
                seen += 1
                if index in wanted:
                    segment, position = wanted[index]
                    segment_feeds[segment][position] = {input_name: preprocess(frame)}
        except VideoError as error:
            raise CalibrationError(str(error)) from error
        _check_range_length(start, stop, seen)
        stop = start + seen
        if all(f is not None for segment in segment_feeds for f in segment):
            break
    dense_started = time.thread_time()
    dense_outputs = [[dense.run(None, feed) for feed in segment] for segment in segment_feeds]
    dense_frame_seconds = (time.thread_time() - dense_started) / (segment_length * len(segment_feeds))
    return _SearchFrames(stop, segment_length, segment_starts, segment_feeds, dense_outputs, dense_frame_seconds)


def _check_range_length(start: int, stop: int, seen: int) -> None:
    if seen < 2:
        raise CalibrationError(f"the calibration range {start}:{stop} holds {seen} frame(s) of the clip; "
                               "need at least 2")


def _boxes_output_index(names: Sequence[str], detections: DetectionOptions) -> int:
    names = list(names)
    name = detections.output or names[0]
    if name not in names:
        raise CalibrationError(f"the boxes output {name!r} is not an output of the model ({names})")
    return names.index(name)


def _search_plan(box_counts: Sequence[int], search_frames: int, segments: int,
                 min_boxes: int) -> tuple[int, list[int], int]:
    """The fewest search frames, at least `search_frames` as `segments` contiguous runs spread over the range
    (see _search_segments), whose scored frames (all but each run's first, which starts from empty state and
    is exact) hold `min_boxes` dense boxes; the whole range when no smaller plan does. Returns the run length,
    the runs' first frames (offsets into box_counts) and the boxes they hold."""
    available = len(box_counts)
    prefix = np.concatenate([[0], np.cumsum(box_counts)])
    total = max(search_frames, 2)
    while True:
        length, offsets = _search_segments(0, available, total, segments)
        boxes = int(sum(prefix[min(o + length, available)] - prefix[o + 1] for o in offsets))
        if boxes >= min_boxes or (length == available and offsets == [0]):
            return length, offsets, boxes
        total += max(1, segments)  # each run one frame longer


def calibrate(model, source: FrameSource, *, frames: tuple[int, int] = (0, 200),
              heldout: Optional[tuple[int, int]] = None, preprocess: Optional[Preprocess] = None,
              options: Optional[CalibrationOptions] = None, log: Optional[Callable[[str], None]] = None
              ) -> CalibrationResult:
    """Choose the input gate and a threshold per Delta node of `model` (dense: path, bytes or ModelProto) on
    frames [frames[0], frames[1]) of `source` (a clip path, a folder of images, or arrays; see
    deltaonnx.video.read_frames), then check them on `heldout` frames (None: skip).

    Returns a CalibrationResult; `save_calibration` writes the model and its JSON files."""
    options = options or CalibrationOptions()
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    if log is not None:  # every line says how much of the time limit is spent
        user_log = log

        def log(message: str) -> None:
            user_log(f"[{time.process_time() - cpu_started:4.0f}/{options.time_limit:.0f} s CPU] {message}")
    else:
        def log(message: str) -> None:
            pass
    _check_options(options, frames, heldout)
    setup = prepare_search(model, source, frames=frames, preprocess=preprocess, options=options, log=log)
    original, dense_bytes, input_name = setup.original, setup.dense_bytes, setup.input_name
    preprocess, start, stop = setup.preprocess, setup.start, setup.stop
    nodes, scorer, budget, runner = setup.nodes, setup.scorer, setup.budget, setup.runner
    dense_flops, total_flops = setup.dense_flops, setup.total_flops
    heldout_frames = (heldout[1] - heldout[0]) if heldout else 0

    def over_time() -> bool:  # leave room for two verifications and the held-out check
        per_frame = setup.dense_frame_seconds + max(runner.delta_frame_seconds(), setup.dense_frame_seconds)
        reserve = 1.2 * per_frame * (2 * (stop - start) + heldout_frames)
        return time.process_time() - cpu_started + reserve > options.time_limit

    def out_of_time(passes: int = 1) -> bool:  # after the search: room for `passes` more and the held-out check?
        per_frame = setup.dense_frame_seconds + max(runner.delta_frame_seconds(), setup.dense_frame_seconds)
        reserve = 1.2 * per_frame * (passes * (stop - start) + heldout_frames)
        return time.process_time() - cpu_started + reserve > options.time_limit

    search = _Search(setup, over_time, log)
    levels, best = search.run()
    log(f"search: {runner.evaluations} candidates, work {100 * best.work:.1f}% on the search frames"
        + (" (stopped by the time limit)" if search.stopped_by_time else ""))
    runner.segments = []  # the search frames are no longer needed

    # profile dense once for the ideal speedup
    conv_work_share = None
    if options.profile_frames > 0 and len(setup.profile_feeds) > 1:
        from .bench import profile_dense

        fused = {name for e in setup.converted_entries for name in e.get("fused", [])}
        profile = profile_dense(dense_bytes, setup.profile_feeds, options.threads, fused)
        conv_work_share = profile.get("conv_work_share")

    # verify on every calibration frame; drift -> refresh; still over budget -> back off (at most 3 times:
    # every level a step down, then half the levels, then all thresholds 0; straight to 0 once out of time)
    refresh_candidates = _refresh_candidates(stop - start, options.refresh, setup.segment_length)
    fixed_refresh = options.refresh if isinstance(options.refresh, int) else 0
    history = []
    schedule = _backoff_schedule(levels)
    attempt = 0
    while True:
        levels = schedule[attempt][1]
        candidate = _converted_with(original, nodes, search.taus(levels), options)  # exactly what ships
        refresh = fixed_refresh
        fraction_sums: dict = {}
        result = _measure(dense_bytes, candidate, source, start, stop, preprocess, input_name, scorer, budget, nodes,
                          dense_flops, total_flops, refresh, options, conv_work_share, "verify", fraction_sums)
        history.append(_short(result, "verify", levels))
        log(f"verify  refresh {refresh or '-'}: work {100 * result.work:.1f}%, speedup {result.speedup:.2f}x, "
            f"{result.agreement.describe()}; early {result.early.describe()} / late {result.late.describe()}")
        # Errors of stale pixels grow with the time since the state was empty (the search measured at most
        # segment_length frames of it): a periodic refresh may cost less than lowering the thresholds.
        if not result.within_budget and refresh_candidates and any(levels.values()):
            for every in refresh_candidates:
                if out_of_time(passes=2):  # this trial, and the exact fallback should it fail
                    break
                trial_sums: dict = {}
                trial = _measure(dense_bytes, candidate, source, start, stop, preprocess, input_name, scorer, budget,
                                 nodes, dense_flops, total_flops, every, options, conv_work_share, f"refresh {every}",
                                 trial_sums)
                history.append(_short(trial, f"refresh {every}", levels))
                log(f"verify  refresh {every}: work {100 * trial.work:.1f}%, speedup {trial.speedup:.2f}x, "
                    f"{trial.agreement.describe()}")
                if trial.within_budget and _late_half_holds(trial, budget):
                    result, refresh, fraction_sums = trial, every, trial_sums
                    break
        if result.within_budget or attempt + 1 >= len(schedule):
            break
        attempt = len(schedule) - 1 if out_of_time() else attempt + 1
        log(f"over budget on the calibration frames ({'; '.join(result.violations)}): back-off {attempt}, "
            f"{schedule[attempt][0]}")
    backoffs = attempt

    # the model measured last is the one written: the converter's own output, so `convert --thresholds`
    # reproduces it
    taus = search.taus(levels)
    thresholds = {n.source: float(taus[n.name]) for n in nodes}
    frames_counted = max(int(fraction_sums.pop("\0frames", 0)), 1)
    for n in nodes:
        n.level, n.tau = levels[n.name], float(taus[n.name])
        n.fraction = fraction_sums.get(n.name, 0.0) / frames_counted if fraction_sums else None
    final = candidate

    # held-out frames
    heldout_result = None
    heldout_refresh_note = None
    if heldout is not None:
        heldout_result = _measure(dense_bytes, final, source, heldout[0], heldout[1], preprocess, input_name, scorer,
                                  budget, nodes, dense_flops, total_flops, refresh, options, conv_work_share,
                                  "held-out", None, allow_empty=True)
        if heldout_result is not None:
            history.append(_short(heldout_result, "held-out", levels))
            if not heldout_result.within_budget and heldout_result.drift and options.refresh == "auto":
                for every in _refresh_candidates(heldout_result.frames, "auto", setup.segment_length):
                    if refresh and every >= refresh:
                        continue
                    if time.process_time() - cpu_started > options.time_limit:
                        break
                    trial = _measure(dense_bytes, final, source, heldout[0], heldout[1], preprocess, input_name,
                                     scorer, budget, nodes, dense_flops, total_flops, every, options,
                                     conv_work_share, f"held-out refresh {every}", None)
                    history.append(_short(trial, f"held-out refresh {every}", levels))
                    if trial.within_budget and _late_half_holds(trial, budget):
                        heldout_result, refresh = trial, every
                        heldout_refresh_note = f"refresh {every} chosen on the held-out frames (they drifted)"
                        break

    _stamp_calibration(final, refresh, budget, thresholds)
    cpu_seconds = time.process_time() - cpu_started
    search_summary = {
        "evaluations": len(search.history), "stopped_by_time": search.stopped_by_time, "backoffs": backoffs,
        "search_frames": setup.segment_length * len(setup.segment_starts), "segments": setup.segment_starts,
        "search_boxes": setup.search_boxes, "range_boxes": setup.range_boxes, "min_boxes": options.min_boxes,
        "frames_skipped": runner.frames_skipped,
        "segment_length": setup.segment_length, "best_on_search_frames": {"work": best.work,
                                                                     "agreement": asdict(best.agreement)},
        "cpu_seconds": cpu_seconds, "wall_seconds": time.perf_counter() - wall_started,
        "history": search.history, "verification": history, "note": heldout_refresh_note,
    }
    settings = {"frames": [start, stop], "heldout": list(heldout) if heldout else None,
                "preprocess": preprocess.describe(), "detections": asdict(options.detections) if options.detections
                else None, "threads": options.threads, "all_nodes": options.all_nodes,
                "dense_fraction": options.dense_fraction, "time_limit": options.time_limit,
                "search_frames": options.search_frames, "search_segments": options.search_segments,
                "refresh_option": options.refresh, "gate_levels": list(GATE_LEVELS),
                "inner_levels": list(INNER_LEVELS), "input": input_name}
    return CalibrationResult(final, thresholds, refresh, nodes, budget, result, heldout_result, search_summary,
                             settings)


def _converted_with(original: onnx.ModelProto, nodes: Sequence[NodeCalibration], taus: dict[str, float],
                    options: "CalibrationOptions") -> onnx.ModelProto:
    """The model `convert` makes with these thresholds (every converted node named in `thresholds`)."""
    from .convert import convert_with_report

    thresholds = {n.source: float(taus[n.name]) for n in nodes}
    gate_tau = max((taus[n.name] for n in nodes if n.gate), default=0.0)
    gate = {"gate": options.gate}
    gate.update({k: v for k, v in (("gate_block", options.gate_block), ("gate_hard", options.gate_hard)) if v is not None})
    converted, _ = convert_with_report(original, threshold=float(gate_tau), inner_threshold=0.0, thresholds=thresholds,
                                       all_nodes=options.all_nodes, dense_fraction=options.dense_fraction, **gate)
    return converted


def _measure(dense_bytes, converted, source, start, stop, preprocess, input_name, scorer, budget, nodes, dense_flops,
             total_flops, refresh, options: CalibrationOptions, conv_work_share, label, fraction_sums,
             allow_empty: bool = False) -> Optional[RangeResult]:
    from .bench import Progress

    progress = Progress(stop - start, f"calibrate: {label}", options.progress)
    try:
        return measure_range(dense_bytes, converted, source, start, stop, preprocess, input_name, scorer, budget,
                             nodes, dense_flops, total_flops, refresh=refresh, threads=options.threads,
                             warmup=options.warmup, progress=progress, conv_work_share=conv_work_share,
                             fraction_sums=fraction_sums)
    except CalibrationError:
        if allow_empty:
            return None
        raise
    except VideoError as error:
        raise CalibrationError(str(error)) from error


def _short(result: RangeResult, label: str, levels: dict[str, int]) -> dict:
    return {"label": label, "refresh": result.refresh, "work": result.work, "speedup": result.speedup,
            "within_budget": result.within_budget, "drift": result.drift, "agreement": asdict(result.agreement),
            "late": asdict(result.late), "levels": dict(levels)}


def _backoff_schedule(levels: dict[str, int]) -> list[tuple[str, dict[str, int]]]:
    """The searched levels, then every level (gate included) one step down, then halved, then all 0 (the exact
    conversion, which keeps any budget dense ORT itself keeps); without repeats."""
    schedule = [("searched", dict(levels)),
                ("every level one step down", {name: max(0, level - 1) for name, level in levels.items()}),
                ("every level halved", {name: level // 2 for name, level in levels.items()}),
                ("all thresholds 0", {name: 0 for name in levels})]
    unique: list[tuple[str, dict[str, int]]] = []
    for label, entry in schedule:
        if not unique or entry != unique[-1][1]:
            unique.append((label, entry))
    return unique


def _search_segments(start: int, stop: int, search_frames: int, segments: int) -> tuple[int, list[int]]:
    """Length and first frames of `segments` contiguous runs of `search_frames` frames in total, spread evenly
    over [start, stop); one run of the whole range when it is short."""
    available = stop - start
    segments = max(1, min(segments, available // 2 if available >= 4 else 1))
    length = max(2, search_frames // segments)
    if length * segments >= available:
        return available, [start]
    if segments == 1:
        return length, [start]
    spacing = (available - length) / (segments - 1)
    return length, [start + int(round(k * spacing)) for k in range(segments)]


def _refresh_candidates(frames: int, option: Union[str, int], segment_length: int) -> list[int]:
    """Refresh periods tried, longest first, when `option` is "auto": a quarter of the range, then the search
    segments' length. Each search segment ran from an empty state for `segment_length` frames, so a model
    refreshed that often sees exactly the state ages the search measured."""
    if option != "auto":
        return []
    shortest = max(2, segment_length)
    candidates = [every for every in (frames // 4,) if every > shortest] + [shortest]
    return [every for every in candidates if every < frames]


def _check_options(options: CalibrationOptions, frames, heldout) -> None:
    if options.threads < 1:
        raise CalibrationError(f"threads must be >= 1, got {options.threads}")
    if options.search_frames < 2:
        raise CalibrationError(f"search_frames must be >= 2, got {options.search_frames}")
    if isinstance(options.min_boxes, bool) or not isinstance(options.min_boxes, int) or options.min_boxes < 0:
        raise CalibrationError(f"min_boxes must be an int >= 0, got {options.min_boxes!r}")
    if options.search_segments < 1:
        raise CalibrationError(f"search_segments must be >= 1, got {options.search_segments}")
    if not (isinstance(options.time_limit, (int, float)) and options.time_limit > 0):
        raise CalibrationError(f"the time limit must be > 0 seconds, got {options.time_limit!r}")
    refresh = options.refresh
    if not (refresh == "auto" or (isinstance(refresh, int) and not isinstance(refresh, bool) and refresh >= 0)):
        raise CalibrationError(f"refresh must be 'auto' or a number of frames >= 0, got {refresh!r}")
    if not 0.0 <= options.dense_fraction <= 1.0:
        raise CalibrationError(f"dense_fraction must be in [0, 1], got {options.dense_fraction}")
    budget = options.budget
    if budget is not None:
        for name in ("min_f1", "min_iou"):
            value = getattr(budget, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise CalibrationError(f"{name} must be in [0, 1], got {value}")
        if budget.max_error is not None and not (math.isfinite(budget.max_error) and budget.max_error >= 0):
            raise CalibrationError(f"max_error must be a finite number >= 0, got {budget.max_error}")
    for name, span in (("frames", frames), ("heldout", heldout)):
        if span is None:
            continue
        a, b = span
        if a < 0 or b <= a:
            raise CalibrationError(f"{name}: need 0 <= A < B, got {a}:{b}")
    if heldout is not None and max(frames[0], heldout[0]) < min(frames[1], heldout[1]):
        raise CalibrationError(f"the held-out frames {heldout[0]}:{heldout[1]} overlap the calibration frames "
                               f"{frames[0]}:{frames[1]}; held-out frames must be unseen")


def _stamp_calibration(model: onnx.ModelProto, refresh: int, budget: Budget, thresholds: dict[str, float]) -> None:
    """Record the refresh period and the budget in the converted model (PeriodicRefresh.from_model reads it)."""
    entry = json.dumps({"format": 1, "refresh": refresh, "budget": asdict(budget), "thresholds": thresholds},
                       separators=(",", ":"))
    for prop in model.metadata_props:
        if prop.key == CALIBRATION_METADATA_KEY:
            prop.value = entry
            return
    model.metadata_props.add(key=CALIBRATION_METADATA_KEY, value=entry)


# ----------------------------------------------------------------------------------------------------------
# files and the report
# ----------------------------------------------------------------------------------------------------------


def side_files(model_path: Union[str, Path]) -> tuple[Path, Path]:
    """OUT.onnx -> (OUT.thresholds.json, OUT.calibration.json)."""
    path = Path(model_path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.thresholds.json"), path.with_name(f"{stem}.calibration.json")


def save_calibration(result: CalibrationResult, model_path: Union[str, Path]) -> list[Path]:
    """Write the converted model, its thresholds ({source node: tau}, what `convert --thresholds` and
    `bench --node-thresholds` read) and the whole calibration record beside it. Returns the paths."""
    from .convert import save_model

    model_path = Path(model_path)
    thresholds_path, record_path = side_files(model_path)
    save_model(result.model, model_path)
    thresholds_path.write_text(json.dumps(result.thresholds, indent=2) + "\n")
    record_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return [model_path, thresholds_path, record_path]


def _fmt(value, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     .rstrip() for row in [header, ["-" * w for w in widths], *rows])


def _agreement_cells(summary: AgreementSummary, detections: bool) -> list[str]:
    cells = [f"{summary.error:.1e}"]
    if detections:
        cells = [_fmt(summary.f1, ".3f"), _fmt(summary.margin_f1, ".3f"), _fmt(summary.mean_iou, ".3f"),
                 str(summary.reference_boxes)] + cells
    return cells


def format_report(result: CalibrationResult) -> str:
    detections = result.settings.get("detections") is not None
    lines = [f"budget: {result.budget.describe()} (against dense ORT, {result.settings['threads']} thread(s))"]
    header = ["frames", "range", "refresh", "conv work redone", "dense ms", "delta ms", "speedup", "ideal"]
    header += (["box F1", "margin F1", "IoU", "boxes"] if detections else []) + ["rel err", "dense jitter"]
    header += (["dense flicker"] if detections else []) + ["early -> late", "budget"]
    rows = []
    for label, r in (("calibration", result.calibration), ("held-out", result.heldout)):
        if r is None:
            rows.append([label, "-", "-", "no frames"] + ["-"] * (len(header) - 4))
            continue
        if detections:
            early_late = f"F1 {_fmt(r.early.f1, '.3f')} -> {_fmt(r.late.f1, '.3f')}"
        else:
            early_late = f"{r.early.error:.1e} -> {r.late.error:.1e}"
        rows.append([label, r.label(), str(r.refresh or "-"), f"{100 * r.work:.1f}% (p90 {100 * r.work_p90:.0f}%)",
                     _fmt(r.dense_ms, ".1f"), _fmt(r.delta_ms, ".1f"), _fmt(r.speedup) + "x",
                     (_fmt(r.ideal_speedup) + "x") if r.ideal_speedup else "-"]
                    + _agreement_cells(r.agreement, detections) + [_fmt(r.dense_jitter, ".1e")]
                    + ([_fmt(r.dense_flicker, ".3f")] if detections else [])
                    + [early_late + (" drift" if r.drift else ""), "ok" if r.within_budget else "; ".join(r.violations)])
    lines += ["", _table(header, rows)]
    lines.append("(speedup: thread CPU time of dense ORT over the converted model, interleaved frame by frame; "
                 "ideal: dense time with its conv work scaled by the work redone; rel err: mean |delta - dense| / "
                 "spread of the dense output, worst output; dense jitter: the same measure between consecutive "
                 "dense frames)")
    if detections:
        d = result.settings["detections"]
        lines.append(f"(box F1: delta boxes against dense ORT's, score > {d['conf_threshold']:g}, IoU >= "
                     f"{d['match_iou']:g}, same class; margin F1: a missed dense box counts only above "
                     f"{d['conf_threshold'] + d['margin']:g}, a delta box matching a dense box above "
                     f"{max(d['conf_threshold'] - d['margin'], 0):g} is no false positive; dense flicker: 1 - box F1 "
                     "of each dense frame against the previous one, the noise floor of dense ORT itself)")
    node_rows = []
    for n in result.nodes:
        node_rows.append([n.name, n.source if len(n.source) <= 40 else "..." + n.source[-37:],
                          "gate" if n.gate else "inner", f"{n.scale:.3g}", f"{n.factor:g}", f"{n.tau:.4g}",
                          _fmt(n.flops / 1e9, ".3f") if n.flops else "-",
                          _fmt(100 * n.fraction, ".1f") + "%" if n.fraction is not None else "-"])
    lines += ["", "thresholds (tau = factor x scale; scale = input range for the gate, input std otherwise):",
              _table(["node", "source", "kind", "scale", "factor", "tau", "GFLOPs", "recomputed"], node_rows)]
    search = result.search
    lines.append("")
    lines.append(f"search: {search['evaluations']} candidates on {search['search_frames']} frames "
                 f"({len(search['segments'])} segment(s)), {search['backoffs']} back-off(s)"
                 + (", stopped by the time limit" if search["stopped_by_time"] else "")
                 + f"; {search['cpu_seconds']:.0f} s CPU, {search['wall_seconds']:.0f} s wall")
    if search.get("note"):
        lines.append(search["note"])
    if search.get("range_boxes") is not None:
        lines.append(f"search frames: {search['search_boxes']} dense boxes on them, {search['range_boxes']} on the "
                     f"calibration range; {search['frames_skipped']} candidate frames skipped (the F1 budget was out "
                     "of reach)")
        if search["search_boxes"] < search["min_boxes"]:
            lines.append(f"note: the calibration range holds only {search['search_boxes']} scored dense boxes, fewer "
                         f"than the {search['min_boxes']} wanted: box F1 resolves 1/{max(search['search_boxes'], 1)} "
                         "at best; a longer --frames range or a lower --conf gives the search more to measure")
    if search.get("search_boxes") is not None and search["search_boxes"] < FEW_BOXES:
        lines.append(f"note: only {search['search_boxes']} dense boxes on the search frames, so box F1 was coarse "
                     "there; more --search-frames or a lower --conf give the search more to measure")
    if result.refresh:
        lines.append(f"refresh: full recompute every {result.refresh} frames per stream (deltaonnx.calibrate."
                     f"PeriodicRefresh; stored in the model's '{CALIBRATION_METADATA_KEY}' metadata)")
    for label, r in (("calibration", result.calibration), ("held-out", result.heldout)):
        if r is not None and r.speedup < 1.0:
            lines.append(f"note: on the {label} frames the converted model is slower than dense ORT "
                         f"({r.speedup:.2f}x): with this budget the model gains nothing on this clip")
            break
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------------------------


def frame_range(text: str) -> tuple[int, int]:
    """'A:B' -> (A, B): frames A .. B-1."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, stop = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B (frames A to B-1), got {text!r}") from None
    if start < 0 or stop <= start:
        raise argparse.ArgumentTypeError(f"expected 0 <= A < B, got {text!r}")
    return start, stop


def refresh_option(text: str) -> Union[str, int]:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of frames, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
    from .bench import channel_values, positive_int, size_hw
    from .cli import add_gate_options, fraction, non_negative_float

    parser = subparsers.add_parser(
        "calibrate", parents=[common],
        help="choose per-node thresholds on a clip within an accuracy budget, and check them on unseen frames",
        description="Choose the input gate and a threshold per Delta node of MODEL that remove the most conv work "
        "while the outputs on the calibration frames of CLIP stay within the budget against dense ORT; write the "
        "converted model (with OUT.thresholds.json for `convert --thresholds` and OUT.calibration.json beside it), "
        "then check the thresholds on held-out frames.")
    parser.add_argument("model", help="the dense ONNX model")
    parser.add_argument("--video", required=True, metavar="CLIP", help="a video file or a folder of images")
    parser.add_argument("-o", "--output", help="the converted model to write (default: <model>.calibrated.onnx)")
    frames = parser.add_argument_group("frames")
    frames.add_argument("--frames", type=frame_range, default=(0, 200), metavar="A:B",
                        help="calibration frames A to B-1 (default 0:200)")
    frames.add_argument("--heldout", metavar="C:D|none",
                        help="held-out frames to check on (default: as many frames right after the calibration "
                        "range; 'none' skips the check)")
    prep = parser.add_argument_group("preprocessing (as bench; defaults follow the model's input shape)")
    prep.add_argument("--size", type=size_hw, metavar="HxW", help="model input size, e.g. 480x640")
    prep.add_argument("--resize", choices=("letterbox", "resize", "none"), default="letterbox",
                      help="fit frames to --size keeping the aspect (letterbox, default), stretching, or not at all")
    prep.add_argument("--scale", type=float, default=1 / 255, metavar="F", help="pixel (0..255) multiplier")
    prep.add_argument("--mean", type=channel_values, default=(0.0,), metavar="M[,M,M]", help="subtracted after --scale")
    prep.add_argument("--std", type=channel_values, default=(1.0,), metavar="S[,S,S]", help="divides after --mean")
    prep.add_argument("--color", choices=("RGB", "BGR", "GRAY"), help="channel order (default RGB)")
    prep.add_argument("--layout", choices=("NCHW", "NHWC"), help="default: from the model's input shape")
    budget = parser.add_argument_group("budget (against dense ORT on the calibration frames)")
    budget.add_argument("--detections", choices=("yolo",), help="decode YOLO boxes: the budget is box F1 and IoU")
    budget.add_argument("--detections-output", metavar="NAME", help="the output holding the boxes (default: first)")
    budget.add_argument("--conf", type=fraction, default=0.25, help="box score threshold (default 0.25)")
    budget.add_argument("--nms-iou", type=fraction, default=0.45, help="NMS IoU (default 0.45)")
    budget.add_argument("--match-iou", type=fraction, default=0.5, help="IoU for a box to match dense (default 0.5)")
    budget.add_argument("--objectness", action="store_true", help="YOLOv5-style heads with an objectness column")
    budget.add_argument("--min-f1", type=fraction, metavar="F",
                        help=f"lowest box F1 against dense (default {DEFAULT_MIN_F1} with --detections)")
    budget.add_argument("--min-iou", type=fraction, metavar="I",
                        help=f"lowest mean IoU of matched boxes (default {DEFAULT_MIN_IOU} with --detections)")
    budget.add_argument("--max-error", type=non_negative_float, metavar="E",
                        help="highest mean |output - dense| / spread of dense output, worst output "
                        f"(default {DEFAULT_MAX_ERROR} without --detections)")
    search = parser.add_argument_group("search")
    search.add_argument("--search-frames", type=positive_int, default=40, metavar="N",
                        help="frames each candidate runs on, at least (default 40; see --min-boxes)")
    search.add_argument("--min-boxes", type=int, default=DEFAULT_MIN_BOXES, metavar="B",
                        help="with --detections: search frames are added until they hold B dense boxes, or are "
                        f"the whole calibration range (default {DEFAULT_MIN_BOXES}; 0: --search-frames only)")
    search.add_argument("--search-segments", type=positive_int, default=2, metavar="S",
                        help="... as S contiguous segments spread over the calibration range (default 2)")
    search.add_argument("--time-limit", type=positive_int, default=600, metavar="SECONDS",
                        help="CPU seconds for the whole calibration, held-out check included (default 600)")
    search.add_argument("--refresh", type=refresh_option, default="auto", metavar="auto|K|0",
                        help="full recompute every K frames per stream; auto (default) tries one when the "
                        "searched thresholds break the budget on the whole calibration range")
    search.add_argument("--threads", type=positive_int, default=1, metavar="N", help="ORT threads (default 1)")
    search.add_argument("--all", dest="all_nodes", action="store_true", help="convert every eligible node")
    search.add_argument("--dense-fraction", type=fraction, default=0.5, metavar="F",
                        help="changed fraction above which an op runs densely (default 0.5)")
    add_gate_options(search)
    search.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(run=run_command)


def _heldout_range(text: Optional[str], frames: tuple[int, int], total: Optional[int]) -> Optional[tuple[int, int]]:
    from .cli import CliError

    if text is not None:
        if text.lower() == "none":
            return None
        try:
            return frame_range(text)
        except argparse.ArgumentTypeError as error:
            raise CliError(f"--heldout: {error}") from None
    start, stop = frames
    heldout = (stop, stop + (stop - start))
    if total is not None:
        heldout = (stop, min(heldout[1], total))
        if heldout[1] <= heldout[0]:
            return None
    return heldout


def run_command(args: argparse.Namespace) -> int:
    from .bench import image_input, preprocess_from_args
    from .cli import CliError, checked_output_path, existing_model_path
    from .convert import load_model
    from .video import frame_count

    model_path = existing_model_path(args.model)
    video = Path(args.video)
    if not video.exists():
        raise CliError(f"no such video or folder: {video}")
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.name
    output = checked_output_path(model_path, args.output or str(model_path.with_name(f"{stem}.calibrated.onnx")))
    if not output.name.endswith(".onnx"):
        raise CliError(f"the output must be an .onnx file (its JSON files go beside it), got {output}")
    detections = None
    if args.detections:
        detections = DetectionOptions(args.detections_output, args.conf, args.nms_iou, args.match_iou, args.objectness)
    if args.min_boxes < 0:
        raise CliError(f"--min-boxes must be >= 0, got {args.min_boxes}")
    elif args.min_f1 is not None or args.min_iou is not None:
        raise CliError("--min-f1 and --min-iou are box budgets: add --detections yolo")
    if detections:
        budget = Budget(DEFAULT_MIN_F1 if args.min_f1 is None else args.min_f1,
                        DEFAULT_MIN_IOU if args.min_iou is None else args.min_iou, args.max_error)
    else:
        budget = Budget(None, None, DEFAULT_MAX_ERROR if args.max_error is None else args.max_error)
    proto = load_model(model_path)
    try:
        _, input_shape = image_input(proto)
        preprocess = preprocess_from_args(args, input_shape)
        total = frame_count(video)
    except VideoError as error:
        raise CliError(str(error)) from error
    except ValueError as error:  # BenchError: not one image input
        raise CliError(str(error)) from error
    if total is not None and args.frames[0] >= total:
        raise CliError(f"--frames {args.frames[0]}:{args.frames[1]}: the clip has {total} frames")
    heldout = _heldout_range(args.heldout, args.frames, total)
    options = CalibrationOptions(
        detections=detections, budget=budget, search_frames=args.search_frames, min_boxes=args.min_boxes,
        search_segments=args.search_segments,
        time_limit=float(args.time_limit), refresh=args.refresh, threads=args.threads, all_nodes=args.all_nodes,
        dense_fraction=args.dense_fraction, gate=args.gate, gate_block=args.gate_block, gate_hard=args.gate_hard,
        progress=not args.quiet)
    log = None if args.quiet else (lambda message: print(f"calibrate: {message}", file=sys.stderr, flush=True))
    try:
        result = calibrate(proto, video, frames=args.frames, heldout=heldout, preprocess=preprocess, options=options,
                           log=log)
    except (CalibrationError, VideoError) as error:
        raise CliError(str(error)) from error
    written = save_calibration(result, output)
    print(f"deltaonnx calibrate: {model_path} on {video}")
    print(result.report())
    if heldout is None:
        print("no held-out frames: the thresholds are unchecked on unseen frames")
    for path in written:
        print(f"wrote {path}")
    return 0


__all__ = ["AgreementSummary", "Budget", "CALIBRATION_METADATA_KEY", "CalibrationError", "CalibrationOptions",
           "CalibrationResult", "DetectionOptions", "Evaluation", "GATE_LEVELS", "INNER_LEVELS", "NodeCalibration",
           "PeriodicRefresh", "RangeResult", "add_command", "calibrate", "format_report", "measure_range",
           "save_calibration", "side_files", "summarize"]
