"""`lasagna data preview`: print the conversations a source's records become, exactly as the model reads them."""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import TextIO

from lasagna.data.records import Source, TaskName
from lasagna.data.sources import open_source
from lasagna.data.tasks import TasksConfig, format_record
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
    data = subparsers.add_parser("data", help="inspect datasets and the conversations made from them")
    data.set_defaults(func=lambda args: _print_help(data))
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    preview = sub.add_parser(
        "preview",
        help="print the first N records of a source as formatted conversations (JSON lines)",
        description="One JSON object per conversation: image id, question and answer text before tokenization, "
        "the number of masks, and the classes present / absent.",
    )
    preview.add_argument("source", help=f"{SHAPEWORLD} or a dataset name from lasagna.data.sources")
    preview.add_argument("--root", default=None, help="data root (default: $LASAGNA_DATA); unused for shapeworld")
    preview.add_argument("--split", default="train", help="dataset split (default: train)")
    preview.add_argument(
        "--task", choices=sorted(SHAPEWORLD_CLASSES), default=None, help="shapeworld task (default: semantic)"
    )
    preview.add_argument("--n", type=int, default=4, help="number of records (default: 4)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the formatting rng (default: 0)")
    preview.set_defaults(func=run_preview)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def open_preview_source(name: str, root: str | None, split: str, task: str | None) -> Source:
    """The ShapeWorld source of `task`, or the named dataset (whose task is its own; `task` must agree)."""
    if name == SHAPEWORLD:
        return SHAPEWORLD_CLASSES[task or "semantic"](split=split)
    source = open_source(name, root, split)
    if task is not None and task != source.task:
        raise ValueError(f"dataset {name!r} is a {source.task} source; --task {task} does not apply to it")
    return source


def preview_lines(source: Source, n: int, seed: int, cfg: TasksConfig | None = None) -> list[dict]:
    """One dict per conversation of the first `n` records, formatted with one `random.Random(seed)`."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    rng = random.Random(seed)
    lines = []
    for index in range(min(n, len(source))):
        sample = format_record(source[index], rng, cfg, source=source.name)
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


def run_preview(args: argparse.Namespace, out: TextIO | None = None) -> int:
    source = open_preview_source(args.source, args.root, args.split, args.task)
    out = out or sys.stdout
    for line in preview_lines(source, args.n, args.seed):
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
    return 0
