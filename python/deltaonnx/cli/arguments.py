"""What the commands share: the user-error type, argument types, and the option groups of the conversion,
the gates and the clip (convert, inspect, triton, bench, calibrate, demo)."""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Optional

from ..graph_passes.conversion_context import DEFAULT_GATE, DEFAULT_INPUT_GATE_HARD, ConversionOptions
from ..graph_passes.delta_ops import LAYOUTS
from ..graph_passes.protocol import DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD
from ..video import Preprocess

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
PROG = "deltaonnx"


class CliError(Exception):
    """A problem with what the user asked for (missing file, bad option value, ...): one line."""


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line like every other user error (argparse's exit code 2 is kept)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def existing_model_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise CliError(f"no such file: {path}")
    if path.is_dir():
        raise CliError(f"{path} is a directory, not an ONNX model")
    return path


def _same_file(a: Path, b: Path) -> bool:
    if not b.exists():
        return os.path.realpath(a) == os.path.realpath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def default_output_path(model_path: Path) -> Path:
    """model.onnx -> model.delta.onnx, beside the input."""
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(f"{stem}.delta.onnx")


def checked_output_path(model_path: Path, requested: Optional[str]) -> Path:
    output = Path(requested) if requested else default_output_path(model_path)
    if output.is_dir():
        raise CliError(f"output path {output} is a directory; give a file name")
    if _same_file(model_path, output):
        raise CliError(f"refusing to overwrite the input model {model_path} (output {output} is the same file)")
    parent = output.resolve().parent if not output.is_symlink() else output.parent
    if not parent.is_dir():
        raise CliError(f"the output directory {output.parent} does not exist")
    return output


def read_json_object(text: str, option: str, shape: str) -> dict:
    """The JSON object in the file named by `option` (e.g. --thresholds); `shape` shows what it must hold."""
    path = Path(text)
    if not path.is_file():
        raise CliError(f"{option}: no such file: {path}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CliError(f"{option}: {path} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise CliError(f"{option}: {path} must hold a JSON object {shape}")
    return data


def read_thresholds_file(text: Optional[str]) -> Optional[dict[str, float]]:
    """A JSON object {node name: tau}."""
    if text is None:
        return None
    data = read_json_object(text, "--thresholds", '{"node name": tau, ...}')
    for name, tau in data.items():
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
            raise CliError(f"--thresholds: the value for {name!r} must be a number >= 0, got {tau!r}")
    return {name: float(tau) for name, tau in data.items()}


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_conversion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=non_negative_float, default=0.0, metavar="TAU",
                        help="input gate: tau of the Delta ops reading a model input, in its units (default 0)")
    parser.add_argument("--inner-threshold", type=non_negative_float, default=0.0, metavar="TAU",
                        help="tau of every other Delta op (default 0: exact after the gate)")
    parser.add_argument("--thresholds", metavar="FILE.json",
                        help='per-node overrides, a JSON object {"<Conv/MaxPool node name>": tau}')
    parser.add_argument("--all", dest="all_nodes", action="store_true",
                        help="convert every eligible node, also those the cost model keeps dense")
    parser.add_argument("--dense-fraction", type=fraction, default=0.5, metavar="F",
                        help="above this changed fraction of its output an op runs densely (default 0.5)")
    add_gate_options(parser)
    add_gate_options(parser, inner=True)
    add_layout_option(parser)


def add_layout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-layout", dest="memory_layout", choices=LAYOUTS, default=ConversionOptions.layout,
                        help="blocked: Delta ops with channel counts that are multiples of 16 exchange channel-blocked "
                        "tensors (no reorder per layer, a cache line per pixel; docs/ops.md#blocked-layout); nchw: "
                        f"every tensor NCHW (default {ConversionOptions.layout})")
    parser.add_argument("--no-fuse-sum", dest="fuse_sum", action="store_false",
                        help="keep each residual Add (and the activation after it) as its own node instead of fusing "
                        "it into the DeltaConv it reads as the op's sum input Z (docs/ops.md); for A/Bs, and for the "
                        "CUDA library, which refuses Z")


def add_gate_options(parser: argparse.ArgumentParser, inner: bool = False) -> None:
    """--gate, --gate-block, --gate-hard (convert, inspect, bench, calibrate); inner: --inner-gate,
    --inner-gate-block, --inner-gate-hard and --inner-gates, the rule of --inner-threshold (convert, inspect)."""
    prefix, tau = ("--inner-", "the node's tau") if inner else ("--", "--threshold")
    what = ("how --inner-threshold decides in each inner Delta op: per pixel, or per block (block means within tau, "
            "every pixel within --inner-gate-hard; default pixel)") if inner else (
            f"how --threshold decides what changed: per block in one DeltaGate (block means within tau, every pixel "
            f"within --gate-hard; it ignores camera noise the pixel rule re-fires on: less work at no more error on "
            f"every clip measured, docs/results.md) or per pixel (each op); default {DEFAULT_GATE}")
    rule, hard = ("pixel", DEFAULT_GATE_HARD) if inner else (DEFAULT_GATE, DEFAULT_INPUT_GATE_HARD)
    parser.add_argument(f"{prefix}gate", choices=("pixel", "block"), default=rule, help=what)
    parser.add_argument(f"{prefix}gate-block", type=int, default=DEFAULT_GATE_BLOCK, metavar="K",
                        help=f"block rule: k x k blocks, 1 <= k <= 4096 (default {DEFAULT_GATE_BLOCK})")
    parser.add_argument(f"{prefix}gate-hard", type=non_negative_float, metavar="TAU",
                        help=f"block rule: bound on every pixel (default {hard:g} x {tau})")
    if inner:
        parser.add_argument("--inner-gates", metavar="FILE.json",
                            help='per-node rules, a JSON object {"<Conv/MaxPool node name>": "pixel" | "block" | '
                            '"block:K" | "block:K:HARD"}')


def read_inner_gates_file(path: Optional[str]) -> Optional[dict]:
    """A JSON object {node name: rule}; convert checks the rules."""
    return None if path is None else read_json_object(path, "--inner-gates", '{"node name": rule, ...}')


def gate_kwargs(args: argparse.Namespace) -> dict:
    return {"gate": args.gate, "gate_block": args.gate_block, "gate_hard": args.gate_hard}


def conversion_kwargs(args: argparse.Namespace) -> dict:
    return {
        "threshold": args.threshold,
        "inner_threshold": args.inner_threshold,
        "thresholds": read_thresholds_file(args.thresholds),
        "all_nodes": args.all_nodes,
        "dense_fraction": args.dense_fraction,
        **gate_kwargs(args),
        "inner_gate": args.inner_gate,
        "inner_gate_block": args.inner_gate_block,
        "inner_gate_hard": args.inner_gate_hard,
        "inner_gates": read_inner_gates_file(args.inner_gates),
        "layout": args.memory_layout,
        "fuse_sum": args.fuse_sum,
    }


def float_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"thresholds must be finite and >= 0, got {bad}")
    return values


def size_hw(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 480x640, got {text!r}") from None
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with positive sides, got {text!r}")
    return values


def channel_values(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 comma-separated numbers, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 1 or 3 values, got {len(values)}")
    return values


def int_at_least(minimum: int):
    """An argument type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """Which frames of the clip, and how they become the model input (bench and demo)."""
    group = parser.add_argument_group("frames")
    group.add_argument("--frames", type=positive_int, metavar="N", help="read at most N frames (default: all)")
    group.add_argument("--start", type=non_negative_int, default=0, metavar="I", help="first frame to read (default 0)")
    group.add_argument("--step", type=positive_int, default=1, metavar="K", help="read every K-th frame (default 1)")
    add_preprocess_options(parser)


def add_preprocess_options(parser: argparse.ArgumentParser) -> None:
    """How frames become the model input (bench, demo, calibrate); preprocess_from_args reads them."""
    prep = parser.add_argument_group("preprocessing (defaults follow the model's input shape)")
    prep.add_argument("--size", type=size_hw, metavar="HxW", help="model input size, e.g. 480x640 (default: the "
                      "model's static size, else the frame's)")
    prep.add_argument("--resize", choices=("letterbox", "resize", "none"), default="letterbox",
                      help="fit frames to --size keeping the aspect (letterbox, default), stretching, or not at all")
    prep.add_argument("--scale", type=float, default=1 / 255, metavar="F", help="pixel (0..255) multiplier (default 1/255)")
    prep.add_argument("--mean", type=channel_values, default=(0.0,), metavar="M[,M,M]", help="subtracted after --scale")
    prep.add_argument("--std", type=channel_values, default=(1.0,), metavar="S[,S,S]", help="divides after --mean")
    prep.add_argument("--color", choices=("RGB", "BGR", "GRAY"), help="channel order (default RGB; GRAY for 1-channel inputs)")
    prep.add_argument("--layout", choices=("NCHW", "NHWC"), help="default: from the model's input shape")


def add_detection_options(group, what: str) -> None:
    """--detections and how boxes are decoded and matched (bench, calibrate); `what` says what F1 is for."""
    group.add_argument("--detections", choices=("yolo",), help=f"decode YOLO boxes: {what}")
    group.add_argument("--detections-output", metavar="NAME", help="the output holding the boxes (default: the first)")
    group.add_argument("--conf", type=fraction, default=0.25, help="box score threshold (default 0.25)")
    group.add_argument("--nms-iou", type=fraction, default=0.45, help="NMS IoU (default 0.45)")
    group.add_argument("--match-iou", type=fraction, default=0.5, help="IoU for a box to match dense (default 0.5)")
    group.add_argument("--objectness", action="store_true", help="YOLOv5-style heads with an objectness column")


def preprocess_from_args(args: argparse.Namespace, input_shape: list) -> Preprocess:
    return Preprocess.for_model_input(input_shape, size=args.size, resize=args.resize, scale=args.scale,
                                      mean=args.mean, std=args.std, color=args.color, layout=args.layout)


def input_shape(text: str) -> tuple[Optional[str], tuple[int, ...]]:
    """NAME=1x3x288x384 or 1x3x288x384 -> (NAME or None, dims)."""
    name, _, dims_text = text.rpartition("=")
    try:
        dims = tuple(int(d) for d in dims_text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected [NAME=]DIMS with positive dims such as 1x3x288x384, got {text!r}")
    return (name or None), dims
