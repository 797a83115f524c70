"""Measuring a whole range: dense and converted interleaved and timed; drift between its halves."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort

from ..bench import ideal_speedup, session_options
from ..session import DeltaSession
from ..video import FrameSource, Preprocess, read_frames
from .agreement import AgreementSummary, Budget, DenseReference, FrameScore, Scorer, dense_flicker, summarize
from .levels import DRIFT_FACTOR, MIN_HALF_BOXES, CalibrationError
from .model_nodes import NodeCalibration, work_redone
from .refresh import PeriodicRefresh

# With dense answers known (the calibration range), dense ORT runs on every this-many-th frame only, to be timed
DENSE_TIMING_STRIDE = 8


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


def frames_of(source: FrameSource, start: int, stop: int) -> Iterable[np.ndarray]:
    return read_frames(source, count=stop - start, start=start)


def measure_range(original_bytes: bytes, converted: Union[bytes, onnx.ModelProto], source: FrameSource, start: int,
                  stop: int, preprocess: Preprocess, input_name: str, scorer: Scorer, budget: Budget,
                  nodes: Sequence[NodeCalibration], dense_flops: float, total_flops: float, *, refresh: int = 0,
                  threads: int = 1, warmup: int = 3, progress=None, conv_work_share: Optional[float] = None,
                  fraction_sums: Optional[dict] = None,
                  references: Optional[Mapping[int, DenseReference]] = None) -> RangeResult:
    """Run dense ORT and the converted model on frames [start, stop) of `source`, interleaved (the order
    alternates per frame), timing each run with the calling thread's CPU time (ORT runs a one-thread session on
    the caller's thread, so other load on the machine does not count).

    `references`: dense ORT's answers already known (frame index -> DenseReference, SearchSetup.references).
    Frames that have one are scored against it, and dense ORT runs on every DENSE_TIMING_STRIDE-th of them only,
    to be timed: the speedup is then the mean dense time of the sampled frames over the converted model's."""
    options = session_options(threads)
    dense = ort.InferenceSession(original_bytes, options, providers=["CPUExecutionProvider"])
    model_bytes = converted if isinstance(converted, bytes) else converted.SerializeToString()
    runner = PeriodicRefresh(DeltaSession(model_bytes, options, dense_fallback=False, stateless_runs=False), refresh)
    thread_clock = time.thread_time if threads == 1 else time.process_time
    dense_cpu = delta_cpu = dense_wall = delta_wall = 0.0
    timed = dense_timed = 0
    scores: list[FrameScore] = []
    works: list[float] = []
    jitters: list[float] = []
    previous_dense = None
    dense_boxes: list = []  # the flicker's
    count = 0
    for index, frame in enumerate(frames_of(source, start, stop)):
        feed = {input_name: preprocess(frame)}
        known = references.get(start + index) if references else None
        results = {}
        order = ("dense", "delta") if index % 2 == 0 else ("delta", "dense")
        if known is not None and index % DENSE_TIMING_STRIDE:
            order = ("delta",)
        for which in order:
            wall, cpu = time.perf_counter(), thread_clock()
            if which == "dense":
                results[which] = dense.run(None, feed)
            else:
                results[which] = runner.run(None, feed)
            results[which + "_cpu"] = thread_clock() - cpu
            results[which + "_wall"] = time.perf_counter() - wall
        if index >= warmup:
            delta_cpu += results["delta_cpu"]
            delta_wall += results["delta_wall"]
            timed += 1
            if "dense" in results:
                dense_cpu += results["dense_cpu"]
                dense_wall += results["dense_wall"]
                dense_timed += 1
        if index > 0:
            fractions = {name: entry["fraction"] for name, entry in runner.session.stats()["nodes"].items()}
            works.append(work_redone(fractions, nodes, dense_flops, total_flops))
            if fraction_sums is not None:
                for name, value in fractions.items():
                    fraction_sums[name] = fraction_sums.get(name, 0.0) + value
        reference = known if known is not None else scorer.reference(results["dense"])
        scores.append(scorer.score(reference, results["delta"]))
        if reference.shown is not None:
            dense_boxes.append(reference.shown)
        if previous_dense is not None and all(a.shape == b.shape for a, b in zip(previous_dense, reference.outputs)):
            jitters.append(max(scorer.errors(previous_dense, reference.outputs), default=0.0))
        previous_dense = reference.outputs
        count += 1
        if progress is not None:
            progress.update(count, f"speedup {_ratio(dense_cpu, dense_timed, delta_cpu, timed):.2f}x"
                            if delta_cpu and dense_timed else "warm-up")
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
    ideal = ideal_speedup(conv_work_share, work) if conv_work_share is not None else None
    return RangeResult(
        start=start, stop=start + count, frames=count, timed_frames=timed, refresh=refresh,
        dense_ms=1000 * dense_cpu / max(dense_timed, 1), delta_ms=1000 * delta_cpu / max(timed, 1),
        speedup=_ratio(dense_cpu, dense_timed, delta_cpu, timed),
        wall_speedup=_ratio(dense_wall, dense_timed, delta_wall, timed),
        work=work, work_p90=float(np.percentile(works, 90)) if works else 1.0,
        agreement=whole, early=early, late=late, within_budget=not violations, violations=violations,
        drift=drifted(early, late, budget), ideal_speedup=ideal,
        dense_jitter=float(np.mean(jitters)) if jitters else None,
        dense_flicker=dense_flicker(dense_boxes, scorer.detections.match_iou) if detections else None)


def _ratio(dense_seconds: float, dense_frames: int, delta_seconds: float, delta_frames: int) -> float:
    """Dense time per frame over the converted model's (NaN when either was not timed)."""
    if not (dense_frames and delta_frames and delta_seconds):
        return float("nan")
    return (dense_seconds / dense_frames) / (delta_seconds / delta_frames)


def _enough_boxes(summary: AgreementSummary) -> bool:
    """Whether a half range's box F1 means anything (always true for the output-error budget)."""
    return summary.reference_boxes is None or summary.reference_boxes >= MIN_HALF_BOXES


def drifted(early: AgreementSummary, late: AgreementSummary, budget: Budget) -> bool:
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


def late_half_holds(result: RangeResult, budget: Budget) -> bool:
    return not _enough_boxes(result.late) or budget.holds(result.late)
