"""`deltaonnx demo`: dense ORT against deltaonnx on an embedded model and a generated clip (or yours);
prints the table and writes a picture (deltaonnx.demo makes the clip, decodes and draws)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..bench import (INPUT_GATE, BenchError, BenchOptions, GateConfig, change_map_picture, image_input, parse_configs,
                     run_benchmark, write_json)
from ..convert import load_model
from ..demo import (CLIP_FRAMES, DEFAULT_MODEL, DEFAULT_THRESHOLDS, DigitCollector, annotate_boxes, annotate_digits,
                    compose_picture, decode_digits, demo_table, make_clip, write_png)
from ..detections import decode_yolo
from ..video import VideoError, describe_source, frame_count, read_frames
from .arguments import (CliError, add_video_options, existing_model_path, float_list, non_negative_int, positive_int,
                        preprocess_from_args)


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo", parents=[common],
        help="dense ORT vs deltaonnx on an embedded model and clip (or yours); writes a picture",
        description="With no arguments: a small digit detector on a generated static-camera clip, offline, in "
        "well under a minute. Prints the dense vs delta table and writes a picture of the frame, what the "
        "converted model found and its change maps.")
    parser.add_argument("--model", help="your ONNX model (default: the embedded digit detector)")
    parser.add_argument("--video", metavar="CLIP", help="your clip: a video file or a folder of images "
                        "(default: a generated static-camera clip)")
    parser.add_argument("--thresholds", type=float_list, metavar="T1,T2,...",
                        help=f"input gates to compare (default {','.join(f'{t:g}' for t in DEFAULT_THRESHOLDS)})")
    parser.add_argument("--inner-threshold", type=float_list, default=[0.0], metavar="TAU",
                        help="inner threshold (default 0)")
    parser.add_argument("--gate", type=GateConfig.parse, default=INPUT_GATE, metavar="GATE",
                        help="the input gate: block (default), block:K, block:K:HARD or pixel (as bench)")
    parser.add_argument("--threads", type=positive_int, default=1, metavar="N", help="ORT threads (default 1)")
    parser.add_argument("--warmup", type=non_negative_int, default=5, metavar="N", help="untimed first frames")
    parser.add_argument("--clip-frames", type=positive_int, default=CLIP_FRAMES, metavar="N",
                        help=f"length of the generated clip (default {CLIP_FRAMES})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated clip (default 0)")
    parser.add_argument("--detections", choices=("yolo",), help="your model is a YOLO detector: draw its boxes")
    parser.add_argument("-o", "--output", default="deltaonnx-demo.png", metavar="PNG",
                        help="where to write the picture (default ./deltaonnx-demo.png)")
    parser.add_argument("--json", metavar="PATH", help="also write the full bench results as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_video_options(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    default_model = args.model is None
    model_path = DEFAULT_MODEL if default_model else existing_model_path(args.model)
    if not model_path.is_file():
        raise CliError(f"the embedded demo model {model_path} is missing: run `python models/train_demo.py`")
    if not args.output.lower().endswith(".png"):
        raise CliError(f"--output writes a PNG: give a path ending in .png, got {args.output}")
    if len(args.inner_threshold) != 1:
        raise CliError("--inner-threshold takes one value")
    if args.detections and default_model:
        raise CliError("--detections is for your own model (--model); the embedded one finds digits by itself")
    proto = load_model(model_path)
    _, input_shape = image_input(proto)
    thresholds = args.thresholds or list(DEFAULT_THRESHOLDS)
    configs = parse_configs(thresholds, args.inner_threshold, [args.gate])
    try:
        truth = None
        if args.video is None:
            clip = make_clip(args.clip_frames, seed=args.seed)
            source, truth, frame_list = "a generated static-camera clip (digits drifting over a still scene)", clip.truth, clip.frames
            frames = read_frames(frame_list, args.frames, args.start, args.step)
            truth = truth[args.start::args.step]
            total = len(truth) if args.frames is None else min(args.frames, len(truth))
        else:
            video = Path(args.video)
            if not video.exists():
                raise CliError(f"no such video or folder: {video}")
            source = describe_source(video)
            frames = read_frames(video, args.frames, args.start, args.step)
            total = frame_count(video)
            if total is not None:
                total = max(0, (total - args.start + args.step - 1) // args.step)
                total = min(total, args.frames) if args.frames else total
        # the embedded detector takes grey / 255 at any size divisible by 4, which the option defaults give
        preprocess = preprocess_from_args(args, input_shape)
        # digits are decoded per frame for the table; YOLO boxes are scored by bench (F1 against dense)
        decode = (lambda outputs: decode_digits(outputs[0])) if default_model else None  # noqa: E731
        picture_index = args.warmup if total is None else max(args.warmup, (2 * total) // 3)
        gated = max(range(len(configs)), key=lambda k: (configs[k].threshold, -k))  # the picture shows the gated run
        collector = DigitCollector(truth if default_model else None, picture_index, decode, len(configs), gated)
        options = BenchOptions(threads=args.threads, warmup=args.warmup, detections=args.detections,
                               profile_frames=10, progress=not args.quiet)
        result = run_benchmark(proto, frames, preprocess, configs=configs, options=options, frame_total=total,
                               source=source, on_frame=collector, capture_maps_at=[picture_index])
    except (BenchError, VideoError) as error:
        raise CliError(str(error)) from error
    result["model"] = str(model_path)

    print(demo_table(result, collector, default_model, model_path, truth is not None))
    picture = collector.picture
    if picture is not None:
        fitted = preprocess.fit(picture["frame"])
        maps = change_map_picture(fitted, picture["maps"], f"frame {picture['index']}", tile_width=160, columns=3)
        if decode is not None:
            left = annotate_digits(fitted, decode(picture["outputs"]))
        elif args.detections:
            boxes = decode_yolo(picture["outputs"][0])[0]
            left = annotate_boxes(picture["frame"], boxes, preprocess.geometry(picture["frame"].shape[:2]))
        else:
            left = fitted
        run = result["runs"][gated]
        caption = (f"deltaonnx {run['label']}: {run['speedup']:.2f}x dense ORT, "
                   f"{100 * run['conv_flops_redone']['mean']:.0f}% of conv FLOPs redone; right: change maps")
        path = write_png(args.output, compose_picture(left, maps, caption))
        print(f"wrote {path} (frame {picture['index']}: what {run['label']} found, and its change maps)")
    if decode is not None:
        result["digits"] = {
            "dense_f1_vs_truth": collector.against_truth[0].f1 if truth is not None else None,
            "runs": [{"label": run["label"],
                      "f1_vs_truth": collector.against_truth[k + 1].f1 if truth is not None else None,
                      "f1_vs_dense": collector.against_dense[k].f1} for k, run in enumerate(result["runs"])]}
    if args.json:
        write_json(result, args.json)
    print(f"demo took {time.perf_counter() - started:.1f} s")
    return 0
