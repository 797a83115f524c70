"""`deltaonnx triton MODEL -o REPO`: a Triton Inference Server model repository, one sequence per camera
(serving/triton_repository.py writes it)."""
from __future__ import annotations

import argparse

from ..convert import OPTION_NAMES
from ..graph_passes.conversion_context import ConversionOptions
from ..serving.triton_repository import (BACKENDS, DEFAULT_IDLE_TIMEOUT_US, DEVICES, RepositoryError,
                                         write_triton_repository)
from .arguments import EXIT_OK, CliError, add_conversion_options, conversion_kwargs, existing_model_path, positive_int


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--debug-timing", action="store_true",
                        help="python backend: every response also carries DELTAONNX_TIMING, where model.py's time "
                        "went (docs/serving.md)")
    add_conversion_options(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    model_path = existing_model_path(args.model)
    # Only the options given differently from ConversionOptions' own defaults (one definition: the dataclass).
    given, defaults = ConversionOptions(**conversion_kwargs(args)), ConversionOptions()
    changed = {name: getattr(given, name) for name in OPTION_NAMES if getattr(given, name) != getattr(defaults, name)}
    max_sequences = args.max_sequences or (8 if args.backend == "python" else 1)
    try:
        written = write_triton_repository(
            model_path, args.output, name=args.name, instances=args.instances, backend=args.backend,
            max_sequences=max_sequences, idle_timeout_us=args.idle_timeout_us, threads=args.threads,
            device=args.device, dense=args.dense, op_library_path=args.op_library_path, conversion=changed,
            debug_timing=args.debug_timing)
    except RepositoryError as error:
        raise CliError(str(error)) from error
    print(written.launch_hint())
    return EXIT_OK
