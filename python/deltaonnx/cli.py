"""The command line: `python -m deltaonnx <command> ...` (also installed as `deltaonnx`).

Each subcommand is one `add_<name>_command(subparsers)` function registering its arguments and its
`run` function in COMMANDS. A run function returns the exit code; it raises CliError (or the
converter's ConversionError) for problems the user can fix, which `main` prints as one line,
`deltaonnx: error: ...`, with exit code 2 (the traceback only with --verbose)."""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

from . import __version__

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
PROG = "deltaonnx"


class CliError(Exception):
    """A problem with what the user asked for (missing file, bad option value, ...): one line."""


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line like every other user error (argparse's exit code 2 is kept)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


# --- helpers shared by subcommands ---------------------------------------------------------------------


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


def _add_conversion_options(parser: argparse.ArgumentParser) -> None:
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


def add_gate_options(parser: argparse.ArgumentParser, inner: bool = False) -> None:
    """--gate, --gate-block, --gate-hard (convert, inspect, bench, calibrate); inner: --inner-gate,
    --inner-gate-block, --inner-gate-hard and --inner-gates, the rule of --inner-threshold (convert, inspect)."""
    from .graph_passes.conversion_context import (DEFAULT_GATE, DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD,
                                                  DEFAULT_INPUT_GATE_HARD)

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


def _conversion_kwargs(args: argparse.Namespace) -> dict:
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
    }


# --- convert -------------------------------------------------------------------------------------------


def add_convert_command(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "convert",
        parents=[common],
        help="rewrite a model so Conv/MaxPool recompute only what changed",
        description="Rewrite an ONNX model: each Conv/MaxPool worth it becomes DeltaConv/DeltaPool with state "
        "inputs/outputs (docs/state_protocol.md). Writes MODEL.delta.onnx beside the input unless -o is given; "
        "never overwrites the input.",
    )
    parser.add_argument("model", help="the ONNX model to convert")
    parser.add_argument("-o", "--output", help="where to write the converted model (default: <model>.delta.onnx)")
    _add_conversion_options(parser)
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .convert import convert_with_report, save_model

    model_path = existing_model_path(args.model)
    output = checked_output_path(model_path, args.output)
    converted, report = convert_with_report(model_path, **_conversion_kwargs(args))
    save_model(converted, output)
    print(report.render())
    print(f"wrote {output}")
    return EXIT_OK


# --- inspect -------------------------------------------------------------------------------------------


def add_inspect_command(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "inspect",
        parents=[common],
        help="show what convert would do, or what it did to a converted model",
        description="For a converted model, list what the conversion did (from its metadata) and its state; "
        "for any other model, what `convert` with the same options would do. Writes nothing.",
    )
    parser.add_argument("model", help="an ONNX model, converted or not")
    parser.add_argument("--input-shape", dest="input_shapes", action="append", type=input_shape, default=[],
                        metavar="[NAME=]DIMS", help="count FLOPs with this input at these sizes, e.g. "
                        "images=1x3x480x640 (NAME may be left out for a model with one input); repeatable. "
                        "A model with dynamic input sizes has unknown FLOPs without it")
    _add_conversion_options(parser)
    parser.set_defaults(run=run_inspect)


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


def _named_input_shapes(proto, given: list[tuple[Optional[str], tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    from .convert import model_input_names

    names = model_input_names(proto)
    shapes = {}
    for name, dims in given:
        if name is None:
            if len(names) != 1:
                raise CliError(f"--input-shape: the model has {len(names)} inputs {names}: name one, NAME=DIMS")
            name = names[0]
        shapes[name] = dims
    return shapes


def run_inspect(args: argparse.Namespace) -> int:
    from .convert import inspect_model, load_model
    from .graph_passes.metadata import read_conversion_metadata

    model_path = existing_model_path(args.model)
    options = _conversion_kwargs(args)
    proto = load_model(model_path)
    report = inspect_model(proto, **options, input_shapes=_named_input_shapes(proto, args.input_shapes))
    if report.done:
        metadata = read_conversion_metadata({p.key: p.value for p in proto.metadata_props}) or {}
        print(f"{model_path}: converted by deltaonnx {metadata.get('deltaonnx_version', '?')}")
        print(report.render())
        state = metadata.get("state", [])
        print(f"state: {len(state)} past inputs / present outputs; change maps: {len(metadata.get('maps', []))} outputs")
        calibration = _calibration_summary(proto)
        if calibration:
            print(calibration)
    else:
        print(f"{model_path}: not converted; `deltaonnx convert` with these options would do:")
        print(report.render())
        if not report.converted_rows:
            print("nothing would be converted")
    if any(row.flops is None for row in report.rows if row.is_conv):
        print("FLOPs of a model with dynamic input sizes: give them with --input-shape NAME=1x3xHxW")
    return EXIT_OK


def _calibration_summary(proto) -> str:
    """One line on what `calibrate` stored in the model (its thresholds are the table's tau column), or ""."""
    from .calibrate import CALIBRATION_METADATA_KEY

    text = next((p.value for p in proto.metadata_props if p.key == CALIBRATION_METADATA_KEY), None)
    if text is None:
        return ""
    try:
        entry = json.loads(text)
    except ValueError:
        return f"calibration: unreadable {CALIBRATION_METADATA_KEY} metadata"
    refresh = int(entry.get("refresh", 0) or 0)
    budget = ", ".join(f"{k} {v}" for k, v in (entry.get("budget") or {}).items() if v is not None)
    thresholds = entry.get("thresholds") or {}
    return (f"calibrated thresholds (tau column): {len(thresholds)} entries; budget: {budget or '-'}; refresh: "
            + (f"full recompute every {refresh} frames per stream" if refresh else "none"))


# --- bench, demo (their logic lives in bench.py and demo.py) --------------------------------------------


def add_bench_command(subparsers, common: argparse.ArgumentParser) -> None:
    from .bench import add_command

    add_command(subparsers, common)


def add_demo_command(subparsers, common: argparse.ArgumentParser) -> None:
    from .demo import add_command

    add_command(subparsers, common)


def add_calibrate_command(subparsers, common: argparse.ArgumentParser) -> None:
    from .calibrate import add_command

    add_command(subparsers, common)


# --- triton (its logic lives in serving/triton_repository.py) -----------------------------------------


def add_triton_command(subparsers, common: argparse.ArgumentParser) -> None:
    from .bench import positive_int
    from .serving.triton_repository import BACKENDS, DEFAULT_IDLE_TIMEOUT_US, DEVICES

    parser = subparsers.add_parser(
        "triton",
        parents=[common],
        help="write a Triton Inference Server model repository, one sequence per camera",
        description="Write REPO/NAME/ for Triton Inference Server: a dense model is converted first (with the "
        "conversion options below), a converted one is served as it is, --dense serves the model unconverted. "
        "Each camera is one sequence (correlation ID) of Triton's sequence batcher. See docs/serving.md.",
    )
    parser.add_argument("model", help="the ONNX model (dense or converted)")
    parser.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository directory")
    parser.add_argument("--name", help="the model's name in the repository (default: the file name)")
    parser.add_argument("--instances", type=positive_int, default=1, metavar="K",
                        help="model instances (python: processes; onnxruntime: sessions) (default 1)")
    parser.add_argument("--backend", choices=BACKENDS, default="python", help="Triton backend (default python)")
    parser.add_argument("--max-sequences", type=positive_int, default=None, metavar="S",
                        help="cameras one instance serves at once; more wait in Triton's backlog "
                        "(default 8 for python, 1 for onnxruntime, which supports only 1)")
    parser.add_argument("--idle-timeout-us", type=positive_int, default=DEFAULT_IDLE_TIMEOUT_US, metavar="T",
                        help=f"drop a camera's sequence after T microseconds without a frame (default "
                        f"{DEFAULT_IDLE_TIMEOUT_US})")
    parser.add_argument("--threads", type=positive_int, default=1, help="ORT threads per instance (default 1)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="onnxruntime backend: gpu runs the instances on GPUs with the CUDA op library")
    parser.add_argument("--op-library-path", metavar="PATH",
                        help="onnxruntime backend: the op library's path as the server sees it (default: the copy "
                        "in the model folder, by its absolute path here)")
    parser.add_argument("--dense", action="store_true", help="serve the model unconverted (a baseline)")
    _add_conversion_options(parser)
    parser.set_defaults(run=run_triton)


def run_triton(args: argparse.Namespace) -> int:
    from .convert import convert
    from .serving.triton_repository import RepositoryError, write_triton_repository

    model_path = existing_model_path(args.model)
    conversion = _conversion_kwargs(args)
    # Only the options given differently from convert's own defaults (one definition: its signature).
    defaults = {k: p.default for k, p in inspect.signature(convert).parameters.items() if p.default is not p.empty}
    changed = {k: v for k, v in conversion.items() if k not in defaults or v != defaults[k]}
    max_sequences = args.max_sequences or (8 if args.backend == "python" else 1)
    try:
        written = write_triton_repository(
            model_path, args.output, name=args.name, instances=args.instances, backend=args.backend,
            max_sequences=max_sequences, idle_timeout_us=args.idle_timeout_us, threads=args.threads,
            device=args.device, dense=args.dense, op_library_path=args.op_library_path, conversion=changed)
    except RepositoryError as error:
        raise CliError(str(error)) from error
    print(written.launch_hint())
    return EXIT_OK


# --- main ----------------------------------------------------------------------------------------------

# Subcommands in the order `--help` lists them; others are added here the same way.
COMMANDS: list[Callable] = [add_convert_command, add_inspect_command, add_bench_command, add_demo_command,
                            add_calibrate_command, add_triton_command]


def build_parser() -> argparse.ArgumentParser:
    common = _ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="more detail, and tracebacks on errors")
    parser = _ArgumentParser(
        prog=PROG,
        description="Change-aware video inference for ONNX Runtime: Conv and MaxPool recompute only what changed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers, common)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from .graph_passes.errors import ConversionError

    return (CliError, ConversionError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version (0) or bad usage (2): returned, so main() never exits
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    verbose = getattr(args, "verbose", False)
    try:
        return int(args.run(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as error:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:  # cannot read or write a file: the user's environment, not a bug
        if verbose:
            traceback.print_exc()
        where = f" {error.filename}" if error.filename else ""
        print(f"{PROG}: error: {error.strerror or error}{':' if where else ''}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as error:  # noqa: BLE001 - a bug: say so, keep the traceback for --verbose
        if verbose:
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(error).__name__}: {error} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR
