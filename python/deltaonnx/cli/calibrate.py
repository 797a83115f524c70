"""`deltaonnx calibrate MODEL --video CLIP`: per-node thresholds chosen on frames, proven on others
(deltaonnx.calibrate searches and verifies; this module reads the options and prints)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Union

from ..bench import image_input
from ..calibrate import (AgreementSummary, Budget, CalibrationOptions, CalibrationResult, DetectionOptions, Evaluation,
                         NodeCalibration, PeriodicRefresh, RangeResult, calibrate, format_report, measure_range,
                         save_calibration, side_files, summarize)
from ..calibrate.levels import (DEFAULT_MAX_ERROR, DEFAULT_MIN_BOXES, DEFAULT_MIN_F1, DEFAULT_MIN_IOU, GATE_LEVELS,
                                INNER_LEVELS, CalibrationError)
from ..convert import load_model
from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from ..video import VideoError, frame_count
from .arguments import (CliError, add_detection_options, add_gate_options, add_preprocess_options, checked_output_path,
                        existing_model_path, fraction, non_negative_float, non_negative_int, positive_int,
                        preprocess_from_args)


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
        return non_negative_int(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of frames >= 0 ({error})") from None


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
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
    add_preprocess_options(parser)
    budget = parser.add_argument_group("budget (against dense ORT on the calibration frames)")
    add_detection_options(budget, "the budget is box F1 and IoU")
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
    if detections is None and (args.min_f1 is not None or args.min_iou is not None):
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
