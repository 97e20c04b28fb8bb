"""`lasagna train`, `lasagna export` and `lasagna calibrate`."""

from __future__ import annotations

import logging


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model (single process or under accelerate/torchrun)")
    p.add_argument("--config", help="YAML training config (configs/train/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.steps=100 data.root=/data")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.set_defaults(func=run_train)
    e = sub.add_parser("export", help="merge LoRA into a training checkpoint and write our checkpoint format")
    e.add_argument("--ckpt", required=True, help="a run folder, or one of its checkpoints/step-N folders")
    e.add_argument("--out", required=True)
    e.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=run_export)
    c = sub.add_parser("calibrate", help="fit the verifiers' fusions on held-out scenes, write the model")
    c.add_argument("--model", required=True, help="a checkpoint folder of ours whose model has a verifier")
    c.add_argument("--out", required=True, help="where the calibrated model is written")
    c.add_argument(
        "--dataset", default="shapeworld", help="semantic (presence) or referring (query) data: `lasagna data` names"
    )
    c.add_argument("--split", default="val", help="held-out scenes: never the split you report")
    c.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    c.add_argument("--limit", type=int, default=200, help="first N scenes")
    c.add_argument("--chunk-size", type=int, default=16)
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=run_calibrate)


def run_train(args) -> int:
    from .config import load_train_config
    from .fit import fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    final = fit(load_train_config(args.config, args.overrides), resume=args.resume)
    print(f"final model: {final}")
    return 0


def run_export(args) -> int:
    from .fit import export_checkpoint

    out = export_checkpoint(args.ckpt, args.out, args.dtype, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def run_calibrate(args) -> int:
    import json
    from pathlib import Path

    from ..api import Lasagna
    from ..checkpoint import save_pretrained
    from ..eval.evaluate import open_eval_sources
    from .calibrate import calibrate_model

    lasagna = Lasagna.from_pretrained(args.model)
    model = lasagna.engine.model
    sources = open_eval_sources(args.dataset, args.split, args.root)
    try:
        report = calibrate_model(lasagna, sources, args.limit, args.chunk_size)
    except ValueError as e:
        raise ValueError(f"{args.model} on {args.dataset} {args.split}: {e}") from e
    dtype = next(model.parameters()).dtype
    out = save_pretrained(model, lasagna.engine.tokenizer, Path(args.out), dtype=dtype, overwrite=args.overwrite)
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0
