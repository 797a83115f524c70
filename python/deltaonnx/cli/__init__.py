"""The command line: `python -m deltaonnx <command> ...` (also installed as `deltaonnx`).

One module per command, each with `add_command(subparsers, common)` registering its arguments and its `run`
function; `arguments.py` holds what they share. A run function returns the exit code; it raises CliError (or the
converter's ConversionError) for problems the user can fix, which `main` prints as one line,
`deltaonnx: error: ...`, with exit code 2 (the traceback only with --verbose). Nothing below this package
imports it (tests/tools/test_import_graph.py)."""
from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Callable, Optional

from .._version import __version__
from ..graph_passes.errors import ConversionError
from . import bench, calibrate, convert, demo, inspect, triton
from .arguments import EXIT_INTERNAL_ERROR, EXIT_OK, EXIT_USER_ERROR, PROG, ArgumentParser, CliError

# Commands in the order `--help` lists them; others are added here the same way.
COMMANDS: list[Callable] = [convert.add_command, inspect.add_command, bench.add_command, demo.add_command,
                            calibrate.add_command, triton.add_command]
USER_ERRORS = (CliError, ConversionError)


def build_parser() -> argparse.ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", help="more detail, and tracebacks on errors")
    parser = ArgumentParser(
        prog=PROG,
        description="Change-aware video inference for ONNX Runtime: Conv and MaxPool recompute only what changed.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in COMMANDS:
        add_command(subparsers, common)
    return parser


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
    except USER_ERRORS as error:
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
