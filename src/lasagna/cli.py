"""`lasagna` command line: subcommands are registered by their own modules and run typed functions."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Each module has `register(subparsers)`, which adds its subcommand and sets `func` to a callable(args) -> int.
# A package left out of an installation (the judges, say) takes its commands with it.
COMMAND_MODULES = (
    "lasagna.convert.cli",
    "lasagna.data.cli",
    "lasagna.shapeworld.cli",
    "lasagna.eval.metrics_cli",
    "lasagna.eval.cli",
    "lasagna.infer.cli",
    "lasagna.train.cli",
    "lasagna.judges.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lasagna", description="LaSagnA segmentation assistant")
    parser.add_argument("--version", action="version", version=f"lasagna {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not name.startswith(f"{err.name}."):
                raise
            continue
        module.register(sub)
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
