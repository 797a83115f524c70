"""`deltaonnx inspect MODEL`: what convert would do to a model, or what it did to a converted one."""
from __future__ import annotations

import argparse
from typing import Optional

from ..calibrate import CalibrationError, CalibrationStamp
from ..calibrate.stamp import describe_gate
from ..convert import inspect_model, load_model, model_input_names
from ..graph_passes.metadata import ConversionMetadata
from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from .arguments import EXIT_OK, CliError, add_conversion_options, conversion_kwargs, existing_model_path, input_shape


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
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
    add_conversion_options(parser)
    parser.set_defaults(run=run_command)


def _named_input_shapes(proto, given: list[tuple[Optional[str], tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    names = model_input_names(proto)
    shapes = {}
    for name, dims in given:
        if name is None:
            if len(names) != 1:
                raise CliError(f"--input-shape: the model has {len(names)} inputs {names}: name one, NAME=DIMS")
            name = names[0]
        shapes[name] = dims
    return shapes


def run_command(args: argparse.Namespace) -> int:

    model_path = existing_model_path(args.model)
    options = conversion_kwargs(args)
    proto = load_model(model_path)
    report = inspect_model(proto, **options, input_shapes=_named_input_shapes(proto, args.input_shapes))
    if report.done:
        metadata = ConversionMetadata.of(proto).entries
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
    try:
        stamp = CalibrationStamp.of(proto)
    except CalibrationError:
        return f"calibration: unreadable {CALIBRATION_METADATA_KEY} metadata"
    if stamp is None:
        return ""
    budget = ", ".join(f"{k} {v}" for k, v in stamp.budget.items() if v is not None)
    return (f"calibrated thresholds (tau column): {len(stamp.thresholds)} entries; budget: {budget or '-'}; "
            + f"input gate: {describe_gate(stamp.gate)}; refresh: "
            + (f"full recompute every {stamp.refresh} frames per stream" if stamp.refresh else "none"))
