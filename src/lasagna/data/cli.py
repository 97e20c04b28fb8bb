"""`lasagna data preview` prints the conversations a source's records become, exactly as the model reads them, with
the paper's strategies as flags; `lasagna data check` reads a whole dataset and reports every problem by file."""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any, TextIO

from lasagna.data.records import Source, TaskName
from lasagna.data.sources import open_source
from lasagna.data.sources.base import LAYOUTS
from lasagna.data.tasks import SemanticTaskConfig, TasksConfig, class_frequencies, format_record
from lasagna.shapeworld import ShapeWorldReasoning, ShapeWorldReferring, ShapeWorldSemantic, ShapeWorldVQA

SHAPEWORLD = "shapeworld"
# ShapeWorld is generated, not read: one source class per task.
SHAPEWORLD_CLASSES: dict[TaskName, type] = {
    "semantic": ShapeWorldSemantic,
    "referring": ShapeWorldReferring,
    "reasoning": ShapeWorldReasoning,
    "vqa": ShapeWorldVQA,
}


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and check datasets and the conversations made from them")
    data.set_defaults(func=lambda args: _print_help(data))
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    preview = sub.add_parser(
        "preview",
        help="print the first N records of a source as formatted conversations (JSON lines)",
        description="One JSON object per conversation: image id, question and answer text before tokenization, "
        "the number of masks, and the classes present / absent. The strategy flags change how semantic records "
        "are asked, so each one's effect shows in the text.",
    )
    preview.add_argument("source", nargs="?", help=f"{SHAPEWORLD} or a dataset name (or use --dataset)")
    _dataset_arguments(preview, required=False)
    preview.add_argument(
        "--task", choices=sorted(SHAPEWORLD_CLASSES), default=None, help="shapeworld task (default: semantic)"
    )
    preview.add_argument("--n", type=int, default=4, help="number of records (default: 4)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the formatting rng (default: 0)")
    strategies = preview.add_argument_group("semantic strategies (default: the paper's recipe)")
    strategies.add_argument(
        "--negatives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sequence augmentation: absent classes answered name<no_ins> (default: on)",
    )
    strategies.add_argument(
        "--class-list",
        choices=["random", "full"],
        help="ask the answered classes only, or every class (default: random)",
    )
    strategies.add_argument(
        "--answer-order",
        choices=["question", "shuffled"],
        help="answer in the question's order (target order consistency) or shuffled (default: question)",
    )
    strategies.add_argument(
        "--list-sampling",
        choices=["present_first", "uniform", "frequency"],
        help="how the answered classes are drawn (default: present_first)",
    )
    strategies.add_argument(
        "--list-length", type=int, nargs=2, metavar=("MIN", "MAX"), help="size of the answered set (default: 1 80)"
    )
    strategies.add_argument(
        "--single-class", action=argparse.BooleanOptionalAction, default=None, help="LISA-style: one class a query"
    )
    preview.set_defaults(func=run_preview)

    check = sub.add_parser(
        "check",
        help="read every file of a dataset and report problems by file (exit 1 on errors)",
        description="Missing or unreadable files, photo/label size mismatches, ids out of range, empty photos, "
        "bad class names; then a summary: photos, classes, pixel share per class, example conversations.",
    )
    _dataset_arguments(check, required=True)
    check.add_argument("--limit", type=int, help="check only the first N records")
    check.add_argument("--examples", type=int, default=3, help="example conversations to print (default: 3)")
    check.add_argument("--seed", type=int, default=0, help="seed of the examples' formatting rng (default: 0)")
    check.set_defaults(func=run_check)


def _dataset_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--dataset", required=required, help="a dataset name: folder, coco, coco-referring, jsonl, ade20k, ..."
    )
    parser.add_argument("--root", default=None, help="data root (default: $LASAGNA_DATA); unused for shapeworld")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    add_reader_arguments(parser)


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    """--layout and --option, the reader options every command that opens a dataset takes (`options_from_args`)."""
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="where the paper's datasets sit under --root: official archives, LISA's dataset/ tree (default: auto)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reader option, value read as YAML (e.g. background=null for a COCO file); repeatable",
    )


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """--layout and every --option KEY=VALUE as the reader's keyword arguments."""
    import yaml

    options: dict[str, Any] = {}
    for item in getattr(args, "option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option {item!r} must look like KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    if getattr(args, "layout", None):
        options["layout"] = args.layout
    return options


def tasks_config(args: argparse.Namespace) -> TasksConfig:
    """The paper's task config with the strategy flags that were given applied to its semantic part."""
    flags = {
        "negatives_in_answer": getattr(args, "negatives", None),
        "class_list": getattr(args, "class_list", None),
        "answer_order": getattr(args, "answer_order", None),
        "list_sampling": getattr(args, "list_sampling", None),
        "list_length": tuple(args.list_length) if getattr(args, "list_length", None) else None,
        "single_class": getattr(args, "single_class", None),
    }
    return TasksConfig(semantic=SemanticTaskConfig(**{k: v for k, v in flags.items() if v is not None}))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def open_preview_source(
    name: str, root: str | None, split: str, task: str | None, options: dict[str, Any] | None = None
) -> Source:
    """The ShapeWorld source of `task`, or the named dataset (whose task is its own; `task` must agree)."""
    if name == SHAPEWORLD:
        return SHAPEWORLD_CLASSES[task or "semantic"](split=split)
    source = open_source(name, root, split, **(options or {}))
    if task is not None and task != source.task:
        raise ValueError(f"dataset {name!r} is a {source.task} source; --task {task} does not apply to it")
    return source


def preview_lines(source: Source, n: int, seed: int, cfg: TasksConfig | None = None) -> list[dict]:
    """One dict per conversation of the first `n` records, formatted with one `random.Random(seed)`."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    cfg = cfg or TasksConfig()
    semantic = cfg.semantic
    frequencies = None
    if source.task == "semantic" and semantic.list_sampling == "frequency" and not semantic.single_class:
        frequencies = class_frequencies(source, semantic.min_pixels, semantic.frequency_records)
    rng = random.Random(seed)
    lines = []
    for index in range(min(n, len(source))):
        sample = format_record(source[index], rng, cfg, source=source.name, frequencies=frequencies)
        for conv in sample.conversations:
            line = {
                "image": sample.meta.image_id,
                "question": conv.question,
                "answer": conv.answer,
                "num_masks": int(conv.masks.shape[0]),
                "classes_present": sample.meta.classes_present,
                "classes_absent": sample.meta.classes_absent,
            }
            if conv.followups:
                line["followups"] = [list(round_) for round_ in conv.followups]
            lines.append(line)
    return lines


def _dataset_name(args: argparse.Namespace) -> str:
    positional, named = getattr(args, "source", None), getattr(args, "dataset", None)
    if positional and named and positional != named:
        raise ValueError(f"two datasets given: {positional!r} and --dataset {named!r}")
    if not (positional or named):
        raise ValueError("name a dataset: --dataset NAME (folder, coco, jsonl, shapeworld, ade20k, ...)")
    return positional or named


def run_preview(args: argparse.Namespace, out: TextIO | None = None) -> int:
    name = _dataset_name(args)
    options = options_from_args(args)
    source = open_preview_source(name, args.root, args.split, args.task, *([options] if options else []))
    out = out or sys.stdout
    for line in preview_lines(source, args.n, args.seed, tasks_config(args)):
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return 0


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from lasagna.data.check import check_dataset, format_report
    from lasagna.data.sources import reader_options

    # why first: a dataset name or option that no reader takes is a mistake in the command (exit 2), not a
    # problem of the tree the report would list (exit 1)
    reader_options(args.dataset, options_from_args(args))
    report = check_dataset(
        args.dataset, args.root, args.split, options_from_args(args), args.limit, args.examples, args.seed
    )
    (out or sys.stdout).write(format_report(report) + "\n")
    return 1 if report.errors else 0
