"""`lasagna train` and `lasagna export`."""

from __future__ import annotations

import logging


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model (single process or under accelerate/torchrun)")
    p.add_argument("--config", help="YAML training config (configs/train/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.steps=100 data.root=/data")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an out_dir that holds an earlier run (its checkpoints, tokenizer and logs are deleted)",
    )
    p.set_defaults(func=run_train)
    e = sub.add_parser("export", help="merge LoRA into a training checkpoint and write our checkpoint format")
    e.add_argument("--ckpt", required=True, help="a run folder, or one of its checkpoints/step-N folders")
    e.add_argument("--out", required=True)
    e.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=run_export)


def run_train(args) -> int:
    from .config import load_train_config
    from .fit import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    final = fit(load_train_config(args.config, args.overrides), resume=args.resume, overwrite=args.overwrite)
    print(f"final model: {final}")
    return 0


def run_export(args) -> int:
    from .export import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, args.dtype, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
