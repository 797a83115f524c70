"""`deltaonnx bench MODEL --video CLIP`: dense ORT against the converted model on your clip (deltaonnx.bench
measures; this module reads the options and prints)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Optional

from ..bench import (INPUT_GATE, BenchError, BenchOptions, GateConfig, format_report, image_input, parse_configs,
                     plot_sweep, run_benchmark, write_json)
from ..convert import load_model
from ..graph_passes.conversion_context import ConversionOptions
from ..graph_passes.delta_ops import LAYOUTS
from ..graph_passes.metadata import is_converted
from ..video import VideoError, describe_source, frame_count, read_frames
from .arguments import (CliError, add_detection_options, add_video_options, existing_model_path, float_list,
                        non_negative_int, positive_int, preprocess_from_args, read_thresholds_file)



def on_off(text: str) -> bool:
    if text.strip() not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"--fuse-sum takes on and off, got {text!r}")
    return text.strip() == "on"


def layout_choice(text: str) -> str:
    if text.strip() not in LAYOUTS:
        raise argparse.ArgumentTypeError(f"a layout is one of {', '.join(LAYOUTS)}, got {text!r}")
    return text.strip()

def add_command(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bench", parents=[common],
        help="measure dense ORT against the converted model on a video",
        description="Convert MODEL (or take a converted MODEL with --original), run dense ORT and deltaonnx on "
        "the same frames of CLIP, interleaved, and report speed, agreement, recomputed fractions and the ideal "
        "speedup they allow.")
    parser.add_argument("model", help="the ONNX model (dense), or a converted one together with --original")
    parser.add_argument("--video", required=True, metavar="CLIP", help="a video file or a folder of images")
    parser.add_argument("--original", metavar="MODEL", help="the dense model, when MODEL is already converted")
    conv = parser.add_argument_group("conversion")
    conv.add_argument("--threshold", type=float_list, metavar="TAU", help="input gate (default 0)")
    conv.add_argument("--thresholds", type=float_list, metavar="T1,T2,...", help="sweep the input gate")
    conv.add_argument("--inner-threshold", type=float_list, metavar="TAU", help="inner threshold (default 0)")
    conv.add_argument("--inner-thresholds", type=float_list, metavar="T1,T2,...", help="sweep the inner threshold")
    conv.add_argument("--node-thresholds", metavar="FILE.json", help='per-node overrides {"<node>": tau}')
    conv.add_argument("--gate", type=GateConfig.parse, metavar="GATE",
                      help="the input gate: block (default), block:K, block:K:HARD (k x k blocks, every pixel "
                      "within HARD; defaults as convert's) or pixel")
    conv.add_argument("--gates", type=lambda text: [GateConfig.parse(t) for t in text.split(",")], metavar="G1,G2,...",
                      help="sweep the input gate, e.g. pixel,block:8,block:4:0.3")
    conv.add_argument("--inner-gate", type=lambda text: [GateConfig.parse(t) for t in text.split(",")],
                      metavar="G1,G2,...", help="the change rule of the inner thresholds, one or a sweep: pixel "
                      "(default), block, block:K, block:K:HARD, e.g. pixel,block:2,block:4")
    conv.add_argument("--memory-layout", dest="memory_layout", type=lambda text: [layout_choice(t) for t in text.split(",")],
                      metavar="L1,L2",
                      help="convert's layout, one or a sweep: nchw, blocked (docs/ops.md#blocked-layout; default "
                      f"{ConversionOptions.layout}), e.g. nchw,blocked")
    conv.add_argument("--fuse-sum", dest="fuse_sum", type=lambda text: [on_off(t) for t in text.split(",")],
                      metavar="on,off", help="convert's residual-Add fusion into the DeltaConv's sum input, one or both "
                      "(default on; off is convert --no-fuse-sum), e.g. on,off for an A/B against the same dense runs")
    conv.add_argument("--all", dest="all_nodes", action="store_true", help="convert every eligible node")
    conv.add_argument("--dense-fraction", type=float, default=0.5, metavar="F",
                      help="changed fraction above which an op runs densely (default 0.5)")
    run = parser.add_argument_group("running")
    run.add_argument("--threads", type=positive_int, default=1, metavar="N", help="ORT threads, both models (default 1)")
    run.add_argument("--warmup", type=non_negative_int, default=5, metavar="N", help="untimed first frames (default 5)")
    run.add_argument("--interleave", type=positive_int, default=8, metavar="N",
                     help="frames per block: dense ORT runs N frames, then each converted model the same N "
                     "(default 8; 1 alternates every frame, which makes each model evict the other's data "
                     "from the caches)")
    run.add_argument("--profile", action="store_true", help="also profile the converted model: time per op type")
    run.add_argument("--profile-frames", type=non_negative_int, default=20, metavar="N",
                     help="frames profiled for the ideal speedup (default 20; 0: skip)")
    run.add_argument("--oracle", action="store_true", help="also run the numpy reference (the rules at pixel "
                     "granularity) on the last --profile-frames frames: the work an exact implementation would redo")
    run.add_argument("--no-fallback", dest="dense_fallback", action="store_false",
                     help="never let DeltaSession switch a stream that changes almost everywhere to the dense "
                     "twin (measures the Delta ops themselves)")
    run.add_argument("--keep-state", dest="stateless_runs", action="store_false",
                     help="with --no-fallback: keep the state on every run however much changes (no stateless runs, "
                     "docs/design.md#stateless-runs)")
    run.add_argument("--no-clock", dest="fallback_clock", action="store_false",
                     help="the fallback decides on the share of work redone alone, not also on delta runs timed "
                     "against the twin's (docs/design.md#the-clock)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    agree = parser.add_argument_group("agreement")
    add_detection_options(agree, "report box F1 against dense")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write all results as JSON ('-' for stdout)")
    out.add_argument("--plot", metavar="OUT.png", help="speedup and agreement against the swept thresholds")
    out.add_argument("--maps", metavar="DIR", help="write per-layer change-map pictures of a few frames to DIR")
    out.add_argument("--maps-frames", type=positive_int, default=3, metavar="N", help="how many frames (default 3)")
    add_video_options(parser)
    parser.set_defaults(run=run_command)


def _one_or_sweep(single: Optional[list], sweep: Optional[list], name: str) -> list[float]:
    if single is not None and sweep is not None:
        raise CliError(f"give --{name} or --{name}s, not both")
    if single is not None and len(single) != 1:
        raise CliError(f"--{name} takes one value; use --{name}s {','.join(f'{v:g}' for v in single)} to sweep")
    return sweep or single or [0.0]


def run_command(args: argparse.Namespace) -> int:
    model_path = existing_model_path(args.model)
    thresholds = _one_or_sweep(args.threshold, args.thresholds, "threshold")
    inners = _one_or_sweep(args.inner_threshold, args.inner_thresholds, "inner-threshold")
    if args.gate is not None and args.gates is not None:
        raise CliError("give --gate or --gates, not both")
    gates = args.gates or [args.gate or INPUT_GATE]
    if not 0 <= args.dense_fraction <= 1:
        raise CliError(f"--dense-fraction must be in [0, 1], got {args.dense_fraction:g}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise CliError(f"--plot writes a PNG: give a path ending in .png, got {args.plot}")
    if args.plot:
        if importlib.util.find_spec("matplotlib") is None:  # optional: only --plot needs it
            raise CliError("--plot needs matplotlib, which is not installed: pip install matplotlib")
    video = Path(args.video)
    if not video.exists():
        raise CliError(f"no such video or folder: {video}")
    proto = load_model(model_path)
    converted = None
    if is_converted(proto):
        if args.original is None:
            raise CliError(f"{model_path} is already converted: pass the dense model with --original MODEL")
        if (args.threshold or args.thresholds or args.inner_threshold or args.inner_thresholds or args.gate or args.gates
                or args.inner_gate or args.memory_layout or args.fuse_sum):
            raise CliError("thresholds are fixed in an already converted model; give the dense model to sweep them")
        converted, proto = proto, load_model(existing_model_path(args.original))
        if is_converted(proto):
            raise CliError(f"--original {args.original} is converted too; give the dense model")
    elif args.original is not None:
        raise CliError(f"--original is for a converted MODEL, but {model_path} is not converted")
    _, input_shape = image_input(proto)
    try:
        preprocess = preprocess_from_args(args, input_shape)
        total = frame_count(video)
        if total is not None:
            total = max(0, (total - args.start + args.step - 1) // args.step)
            total = min(total, args.frames) if args.frames else total
        frames = read_frames(video, args.frames, args.start, args.step)
        options = BenchOptions(
            threads=args.threads, warmup=args.warmup, interleave=args.interleave, detections=args.detections,
            detections_output=args.detections_output, conf_threshold=args.conf, nms_iou=args.nms_iou,
            match_iou=args.match_iou, objectness=args.objectness, all_nodes=args.all_nodes,
            dense_fraction=args.dense_fraction, node_thresholds=read_thresholds_file(args.node_thresholds),
            profile_frames=args.profile_frames, profile_delta=args.profile, oracle=args.oracle,
            dense_fallback=args.dense_fallback, stateless_runs=args.stateless_runs, fallback_clock=args.fallback_clock,
            maps_dir=Path(args.maps) if args.maps else None, maps_frames=args.maps_frames, progress=not args.quiet)
        inner_gates = args.inner_gate or [GateConfig()]
        result = run_benchmark(proto, frames, preprocess, configs=parse_configs(thresholds, inners, gates, inner_gates,
                                                                    args.memory_layout or [ConversionOptions.layout],
                                                                    args.fuse_sum or [ConversionOptions.fuse_sum]),
                               converted=converted, options=options, frame_total=total,
                               source=describe_source(video))
    except (BenchError, VideoError) as error:
        raise CliError(str(error)) from error
    result["model"] = str(model_path)
    if converted is not None:
        result["original"] = str(args.original)
    # with --json -, stdout carries the JSON alone
    print(format_report(result), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        write_json(result, args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    if args.plot:
        try:
            print(f"wrote {plot_sweep(result, args.plot)}")
        except BenchError as error:
            raise CliError(str(error)) from error
    return 0
