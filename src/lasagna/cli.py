"""`lasagna` command line: subcommands are registered by their own modules and run typed functions."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

# Each module has `register(subparsers)`, which adds the subcommands named beside it and sets `func` to a
# callable(args) -> int. A call imports only the module of its command (every module for `lasagna --help` or a name
# not listed here), so `lasagna segment` never pays for the imports of training or serving. A package left out of an
# installation (the judges, say) takes its commands with it.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "lasagna.convert.cli": ("convert",),
    "lasagna.data.cli": ("data",),
    "lasagna.shapeworld.cli": ("shapeworld",),
    "lasagna.eval.metrics_cli": ("metrics",),
    "lasagna.eval.cli": ("eval",),
    "lasagna.infer.cli": ("segment",),
    "lasagna.serve.cli": ("serve",),
    "lasagna.train.cli": ("train", "export"),
    "lasagna.judges.cli": ("calibrate", "train-verifier", "train-picker"),
}


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


def command_of(argv: list[str]) -> str | None:
    """The subcommand an argument list asks for: its first word that is not an option (the top-level parser's
    options take no values), None for none."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `lasagna` parser with every subcommand, or, for a `command` listed in `COMMAND_MODULES`, with that one
    alone (and `info`)."""
    parser = argparse.ArgumentParser(prog="lasagna", description="LaSagnA segmentation assistant")
    parser.add_argument("--version", action="version", version=f"lasagna {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_info(sub)
    modules = [name for name, commands in COMMAND_MODULES.items() if command in commands] or list(COMMAND_MODULES)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if not (err.name == name or name.startswith(f"{err.name}.")):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(argv))
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
