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
    "lasagna.serve.cli",
    "lasagna.train.cli",
    "lasagna.judges.cli",
)


USER_ERRORS = (ValueError, KeyError, OSError)
"""What bad input raises (a wrong value or name, a file that is missing, unreadable, a folder, or in the way): one
line on stderr and exit status 2; `--debug` shows the traceback instead. Anything else is a bug and keeps its
traceback."""


def register_info(sub) -> None:
    p = sub.add_parser("info", help="what a model is: sizes, parts, vocabulary, defaults, where it came from")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=run_info)


def run_info(args) -> int:
    import json

    from .api import Lasagna

    info = Lasagna.from_pretrained(args.model, device="cpu").info()  # why: describing needs no GPU memory
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    vocabulary = info.pop("vocabulary")
    info.pop("palette")
    for key, value in info.items():
        print(f"{key:<20s} {value}")
    if vocabulary is None:
        print(f"{'vocabulary':<20s} open: any class name (none is warned about)")
    else:
        names = ", ".join(vocabulary)
        print(f"{'vocabulary':<20s} {len(vocabulary)} names; others are answered but warned about: {names}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lasagna", description="LaSagnA segmentation assistant")
    parser.add_argument("--version", action="version", version=f"lasagna {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_info(sub)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not (err.name == name or name.startswith(f"{err.name}.")):
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
    except USER_ERRORS as e:
        if args.debug:
            raise
        message = str(e) if not isinstance(e, KeyError) else str(e.args[0]) if e.args else repr(e)
        if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in message:
            message = f"{message}: {e.filename}"
        print(f"lasagna {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
