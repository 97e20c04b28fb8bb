"""`lasagna eval`: metrics of a model on a dataset split, printed and written as JSON, with a per-class IoU table
and chart; `--save-preds DIR` also writes every answer (see `eval.preds` for the layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def register(sub) -> None:
    from ..data.cli import add_reader_arguments
    from ..devices import add_arguments

    p = sub.add_parser("eval", help="evaluate a model on a dataset split")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--dataset", required=True, help="shapeworld, or a dataset name from `lasagna data preview`")
    p.add_argument("--split", default="test")
    p.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    add_reader_arguments(p)
    p.add_argument("--limit", type=int, help="first N images of each task source")
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--decoder", choices=["free", "template"])
    p.add_argument("--single-class", action="store_true", help="ask one class per query (LISA-style models)")
    p.add_argument(
        "--present-only",
        action="store_true",
        help="ask each image only for the classes it holds: mask quality under perfect recognition (an upper bound)",
    )
    p.add_argument(
        "--merge",
        choices=["score", "logit"],
        default="score",
        help="overlapping masks: a pixel goes to the highest P(present) * P(pixel), or the highest logit (released)",
    )
    p.add_argument("--tasks", help="comma-separated tasks to evaluate (default: every task the dataset has)")
    p.add_argument("--out", help="report file (default: eval-<dataset>-<split>.json); the chart goes beside it")
    p.add_argument("--save-preds", metavar="DIR", help="write each answer: DIR/<task>/<image id>/, DIR/semantic-gt/")
    p.add_argument("--save-overlays", action="store_true", help="with --save-preds, an overlay.png per answer")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and "LOCAL_RANK" in os.environ):  # not launched by torchrun or accelerate
        return _evaluate(args, 0, 1, None)

    def reduce(t, reduction="sum"):
        dist.all_reduce(t)
        return t

    dist.init_process_group("gloo")
    try:
        code = _evaluate(args, dist.get_rank(), dist.get_world_size(), reduce)
        # A rank that exits while its peer still holds the gloo connection can make the peer abort (SIGABRT) on the
        # closed socket: meet before tearing the group down. (A rank that raised skips this; torchrun stops all.)
        dist.barrier()
        return code
    finally:
        dist.destroy_process_group()


def _evaluate(args, rank: int, world: int, reduce) -> int:
    from ..api import Lasagna
    from ..atomic import write_atomic_file
    from ..data.cli import options_from_args
    from ..devices import load_options
    from .evaluate import evaluate_model
    from .report import format_table, save_iou_chart

    if args.save_overlays and not args.save_preds:
        raise ValueError("--save-overlays needs --save-preds DIR")
    if args.limit is not None and args.limit < 1:  # why: 0 would write a report of no images over the last one
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    model = Lasagna.from_pretrained(args.model, **load_options(args))
    model_name = args.model or "embedded:shapeworld-small"
    report = evaluate_model(
        model,
        args.dataset,
        args.split,
        root=args.root,
        limit=args.limit,
        chunk_size=args.chunk_size,
        decoder=args.decoder,
        rank=rank,
        world=world,
        reduce=reduce,
        progress=rank == 0,
        single_class=args.single_class,
        present_only=args.present_only,
        merge=args.merge,
        options=options_from_args(args),
        tasks=tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else None,
        save_preds=args.save_preds,
        save_overlays=args.save_overlays,
        # why the model's default: what the answers were decoded with, as segment's run.json records it
        run_info={
            "model": model_name,
            "decoder": args.decoder or model.model.cfg.default_decoder,
            "chunk_size": args.chunk_size,
        },
    )
    report["model"] = model_name
    if rank == 0:
        out = Path(args.out or f"eval-{args.dataset}-{args.split}.json")
        write_atomic_file(out, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n"))
        rows = report.get("semantic", {}).get("per_class")
        if rows:
            print(format_table(rows))
        summary = {
            task: {k: v for k, v in vals.items() if k not in ("per_class_iou", "per_class")}
            for task, vals in report.items()
            if isinstance(vals, dict)
        }
        print(json.dumps(summary, indent=1))
        print(f"wrote {out}")
        if rows and any(r["iou"] is not None for r in rows):
            chart = out.with_name(f"{out.stem}-per-class-iou.png")
            title = f"{Path(model_name).name} on {args.dataset} {args.split}: per-class IoU"
            print(f"wrote {save_iou_chart(chart, rows, title)}")
        if args.save_preds:
            print(f"wrote the answers under {args.save_preds}")
    return 0
