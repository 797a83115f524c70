"""The budget and how a candidate is scored against dense ORT: output error, box F1 and IoU, flicker."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..detections import SCORE_MARGIN, decode_with_margin, flicker, match, match_with_margin
from .levels import CalibrationError


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


def f1_score(tp: int, fp: int, fn: int) -> float:
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
        summary.f1 = f1_score(tp, fp, fn)
        summary.margin_f1 = f1_score(sum(s.margin_true_positives for s in scores),
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
class DenseReference:
    """Dense ORT's answer for one frame; `boxes` decoded down to conf - margin (`shown`: above conf)."""

    outputs: list
    boxes: Any = None
    shown: Any = None


class Scorer:
    """Compares a candidate's outputs with dense ORT's for one frame."""

    def __init__(self, output_names: Sequence[str], spreads: Sequence[float], detections: Optional[DetectionOptions]):
        self.output_names = list(output_names)
        self.spreads = [s if s > 0 and math.isfinite(s) else 1.0 for s in spreads]
        self.detections = detections
        self.boxes_index = boxes_output_index(self.output_names, detections) if detections is not None else 0

    def reference(self, outputs: list) -> DenseReference:
        outputs = [np.array(o, copy=True) for o in outputs]  # DeltaSession/ORT buffers may be reused
        if not self.detections:
            return DenseReference(outputs)
        boxes = self._decode(outputs[self.boxes_index])
        return DenseReference(outputs, boxes, boxes.above(self.detections.conf_threshold))

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

    def score(self, reference: DenseReference, outputs: list) -> FrameScore:
        score = FrameScore(self.errors(reference.outputs, outputs))
        if self.detections is not None:
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
    return decode_with_margin(output, detections.conf_threshold, detections.margin,
                              iou_threshold=detections.nms_iou, objectness=detections.objectness)[0]


def dense_flicker(shown: Sequence, match_iou: float) -> Optional[float]:
    """1 - box F1 of each dense frame's boxes (above the threshold) against the previous frame's: the
    frame-to-frame noise of dense ORT itself. None with fewer than two frames."""
    if len(shown) < 2:
        return None
    return 1.0 - flicker(shown, match_iou).f1


def boxes_output_index(names: Sequence[str], detections: DetectionOptions) -> int:
    names = list(names)
    name = detections.output or names[0]
    if name not in names:
        raise CalibrationError(f"the boxes output {name!r} is not an output of the model ({names})")
    return names.index(name)
