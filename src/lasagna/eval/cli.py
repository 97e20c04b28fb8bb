"""`lasagna eval`: metrics of a model on a dataset split, printed and written as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a dataset split")
    p.add_argument("--model", help="checkpoint folder (default: the embedded ShapeWorld model)")
    p.add_argument("--dataset", required=True, help="shapeworld, or a dataset name from `lasagna data preview`")
    p.add_argument("--split", default="test")
    p.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    p.add_argument("--limit", type=int, help="first N images of each task source")
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--decoder", choices=["free", "template"])
    p.add_argument("--single-class", action="store_true", help="ask one class per query (LISA-style models)")
    p.add_argument("--tasks", default="semantic,referring", help="comma-separated tasks to evaluate")
    p.add_argument("--out", help="report file (default: eval-<dataset>-<split>.json)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch.distributed as dist

    from ..api import Lasagna
    from .evaluate import evaluate_model

    rank, world, reduce = 0, 1, None
    if dist.is_available() and "LOCAL_RANK" in os.environ:  # launched by torchrun or accelerate
        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()

        def reduce(t, reduction="sum"):
            dist.all_reduce(t)
            return t

    model = Lasagna.from_pretrained(args.model)
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
        tasks=tuple(t.strip() for t in args.tasks.split(",")),
    )
    report["model"] = args.model or "embedded:shapeworld-small"
    if rank == 0:
        out = Path(args.out or f"eval-{args.dataset}-{args.split}.json")
        out.write_text(json.dumps(report, indent=1) + "\n")
        summary = {
            task: {k: v for k, v in vals.items() if k != "per_class_iou"}
            for task, vals in report.items()
            if isinstance(vals, dict)
        }
        print(json.dumps(summary, indent=1))
        print(f"wrote {out}")
    return 0
