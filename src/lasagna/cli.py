"""`lasagna` command line: subcommands are registered by their own modules and run typed functions."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Each module has `register(subparsers)`, which adds its subcommand and sets `func` to a callable(args) -> int.
COMMAND_MODULES = (
    "lasagna.convert.cli",
    "lasagna.data.cli",
    "lasagna.data.shapeworld.cli",
    "lasagna.eval.metrics_cli",
    "lasagna.eval.cli",
    "lasagna.infer.cli",
    "lasagna.serve.cli",
    "lasagna.train.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lasagna", description="LaSagnA segmentation assistant")
    parser.add_argument("--version", action="version", version=f"lasagna {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"lasagna {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
