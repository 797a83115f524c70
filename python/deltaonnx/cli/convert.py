"""`deltaonnx convert MODEL`: write the converted model and print what was done."""
from __future__ import annotations

import argparse

from ..convert import convert_with_report, save_model
from .arguments import EXIT_OK, add_conversion_options, checked_output_path, conversion_kwargs, existing_model_path


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
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
    add_conversion_options(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    model_path = existing_model_path(args.model)
    output = checked_output_path(model_path, args.output)
    converted, report = convert_with_report(model_path, **conversion_kwargs(args))
    save_model(converted, output)
    print(report.render())
    print(f"wrote {output}")
    return EXIT_OK
