"""Before the search: the dense reference on the calibration range, the search frames, the scales."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import onnxruntime as ort

from ..bench import conv_flops, image_input, session_options
from ..convert import load_model
from ..graph_passes.delta_ops import GATE_RULES
from ..graph_passes.metadata import ConversionMetadata, is_converted
from ..video import FrameSource, Preprocess, VideoError
from .agreement import Budget, Scorer, boxes_output_index, decode_boxes
from .candidates import SearchModels, convert_thresholds, usable_gate_levels
from .levels import DEFAULT_MAX_ERROR, DEFAULT_MIN_F1, DEFAULT_MIN_IOU, FEW_BOXES, CalibrationError
from .model_nodes import NodeCalibration, gate_source_nodes, measure_scales, nodes_below
from .options import CalibrationOptions
from .search import CandidateRunner, SearchSetup
from .verify import frames_of

# Dense outputs kept for the verification (which then runs dense ORT only to time it): up to this many bytes,
# 200 frames of a YOLOv8 head at 640 (84 x 8400 floats) take 565 MB; above it only the search frames' are kept
REFERENCE_BYTES = 1 << 30


def resolve_budget(options: "CalibrationOptions") -> Budget:
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
    options = options or CalibrationOptions()
    log = log or (lambda message: None)
    check_options(options, frames, None)
    original = load_model(model)
    if is_converted(original):
        raise CalibrationError("the model is already converted; calibrate the dense original")
    try:
        input_name, input_shape = image_input(original)
    except ValueError as error:  # bench's BenchError: not exactly one image input
        raise CalibrationError(str(error)) from error
    preprocess = preprocess or Preprocess.for_model_input(input_shape)
    budget = resolve_budget(options)

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

    searched = [first + k for first in segment_starts for k in range(segment_length)]
    spreads = [float(np.std(np.concatenate([np.asarray(dense_outputs[k][i], np.float64).ravel() for k in searched])))
               for i in range(len(output_names))]
    scorer = Scorer(output_names, spreads, options.detections)
    # every frame dense ORT ran, scored once: the search reads its segments' frames, the verification the rest
    references = {k: scorer.reference(dense_outputs.pop(k)) for k in sorted(dense_outputs)}
    segments = [[(feed, references[first + k]) for k, feed in enumerate(fs)] for first, fs in zip(segment_starts, feeds)]

    # the converted model (all thresholds 0) and its nodes; the search raises thresholds from it
    base = convert_thresholds(original, {}, 0.0, options, keep_references=True)
    converted_entries = [e for e in ConversionMetadata.of(base).nodes if e.get("decision") == "converted"]
    unnamed = [e["name"] for e in converted_entries if not e.get("source")]
    if unnamed:
        raise CalibrationError(f"{len(unnamed)} converted node(s) have no name in the model (e.g. the source of "
                               f"{unnamed[0]}); per-node thresholds need named Conv/MaxPool nodes")
    flops = conv_flops(original, feeds[0][0])
    converted_conv_sources = {e["source"] for e in converted_entries if e.get("source_op") == "Conv"}
    total_flops = float(sum(flops.values()))
    dense_flops = float(sum(f for name, f in flops.items() if name not in converted_conv_sources))
    gate_sources = gate_source_nodes(original, (e["source"] for e in converted_entries))
    source_inputs = {n.name: n.input[0] for n in original.graph.node if n.name and n.input}
    tensors = {e["name"]: source_inputs[e["source"]] for e in converted_entries}
    gate_tensors = {tensors[e["name"]] for e in converted_entries if e["source"] in gate_sources}
    scale_count = max(1, options.scale_frames)
    scale_feeds = [segment[k] for k in range(segment_length) for segment in feeds][:scale_count]
    scales = measure_scales(original, tensors, gate_tensors, scale_feeds, options.threads)
    nodes = [NodeCalibration(name=e["name"], source=e["source"], op=e.get("op", "?"), gate=e["source"] in gate_sources,
                             scale=scales[tensors[e["name"]]],
                             flops=float(flops.get(e["source"], 0.0)) if e.get("source_op") == "Conv" else 0.0)
             for e in converted_entries]
    runner = CandidateRunner(SearchModels(original, nodes, options, exact=base), nodes, segments, input_name, scorer,
                             budget, dense_flops, total_flops, options.threads)
    gate_levels = usable_gate_levels(options, nodes)
    if len(gate_levels) < 2 and any(n.gate for n in nodes):
        log(f"the gate stays exact: --gate-hard {options.gate_hard:g} is below the ladder's first level")
    profile_feeds = [f for segment in feeds for f in segment][:max(options.profile_frames, 0) + 1]
    search_boxes = None
    if options.detections is not None:
        search_boxes = runner.scored_boxes()
        if search_boxes < FEW_BOXES:
            log(f"only {search_boxes} dense boxes on the search frames: box F1 is measured coarsely there "
                "(more --search-frames or a lower --conf help); the verification on all frames decides")
    return SearchSetup(original, dense_bytes, input_name, preprocess, start, stop, segment_length, segment_starts,
                       nodes, converted_entries, scorer, budget, runner, dense_flops, total_flops,
                       frames_read.dense_frame_seconds, profile_feeds, search_boxes, frames_read.range_boxes,
                       gate_levels, references, nodes_below(original, nodes), options.dense_fraction)


@dataclass
class _SearchFrames:
    """The search segments as model inputs with dense ORT's outputs on them."""

    stop: int  # one past the last calibration frame the clip really has
    segment_length: int
    segment_starts: list[int]
    feeds: list[list[dict]]
    dense_outputs: dict[int, list]  # frame index -> dense ORT's outputs: the segments' frames, and others run
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
            feeds = [{input_name: preprocess(frame)} for frame in frames_of(source, start, stop)]
        except VideoError as error:
            raise CalibrationError(str(error)) from error
        _check_range_length(start, stop, len(feeds))
        dense_started = time.thread_time()
        outputs = [dense.run(None, feed) for feed in feeds]
        dense_frame_seconds = (time.thread_time() - dense_started) / len(feeds)
        boxes_index = boxes_output_index([o.name for o in dense.get_outputs()], options.detections)
        counts = [len(decode_boxes(o[boxes_index], options.detections).above(options.detections.conf_threshold))
                  for o in outputs]
        length, offsets, search_boxes = search_plan(counts, options.search_frames, options.search_segments,
                                                     options.min_boxes)
        searched = {o + k for o in offsets for k in range(length)}
        kept = sum(a.nbytes for a in outputs[0]) * len(outputs) <= REFERENCE_BYTES
        return _SearchFrames(start + len(feeds), length, [start + o for o in offsets],
                             [feeds[o:o + length] for o in offsets],
                             {start + k: o for k, o in enumerate(outputs) if kept or k in searched},
                             dense_frame_seconds, sum(counts), search_boxes)
    for _ in range(2):
        segment_length, segment_starts = search_segments(start, stop, options.search_frames, options.search_segments)
        wanted = {s + k: (i, k) for i, s in enumerate(segment_starts) for k in range(segment_length)}
        segment_feeds: list[list[Optional[dict]]] = [[None] * segment_length for _ in segment_starts]
        seen = 0
        try:
            for index, frame in enumerate(frames_of(source, start, stop), start=start):
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
    dense_outputs = {first + k: dense.run(None, feed) for first, segment in zip(segment_starts, segment_feeds)
                     for k, feed in enumerate(segment)}
    dense_frame_seconds = (time.thread_time() - dense_started) / (segment_length * len(segment_feeds))
    return _SearchFrames(stop, segment_length, segment_starts, segment_feeds, dense_outputs, dense_frame_seconds)


def _check_range_length(start: int, stop: int, seen: int) -> None:
    if seen < 2:
        raise CalibrationError(f"the calibration range {start}:{stop} holds {seen} frame(s) of the clip; "
                               "need at least 2")


def search_plan(box_counts: Sequence[int], search_frames: int, segments: int,
                 min_boxes: int) -> tuple[int, list[int], int]:
    """The fewest search frames, at least `search_frames` as `segments` contiguous runs spread over the range
    (see search_segments), whose scored frames (all but each run's first, which starts from empty state and
    is exact) hold `min_boxes` dense boxes; the whole range when no smaller plan does. Returns the run length,
    the runs' first frames (offsets into box_counts) and the boxes they hold."""
    available = len(box_counts)
    prefix = np.concatenate([[0], np.cumsum(box_counts)])
    total = max(search_frames, 2)
    while True:
        length, offsets = search_segments(0, available, total, segments)
        boxes = int(sum(prefix[min(o + length, available)] - prefix[o + 1] for o in offsets))
        if boxes >= min_boxes or (length == available and offsets == [0]):
            return length, offsets, boxes
        total += max(1, segments)  # each run one frame longer


def search_segments(start: int, stop: int, search_frames: int, segments: int) -> tuple[int, list[int]]:
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


def check_options(options: CalibrationOptions, frames, heldout) -> None:
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
    if options.gate not in GATE_RULES:
        raise CalibrationError(f"gate must be one of {', '.join(GATE_RULES)}, got {options.gate!r}")
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
