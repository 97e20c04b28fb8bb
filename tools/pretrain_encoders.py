"""Stage 0 alone: pretrain a fresh model's image encoders and save them, to share them between training runs.

    python tools/pretrain_encoders.py --out runs/enc [--config configs/train/shapeworld-small.yaml]
        [--patch-ce] [dotted overrides, e.g. encoders.steps=2000]

Takes stage 0's settings, the seed, the preset and the image size from the training config (the default recipe's:
3000 steps of 32 scenes, lr 2e-3, class-naming patch heads and object heads) and writes OUT/encoders.safetensors and
OUT/encoders.json (its learning curve), which `lasagna train ... encoders.from_file=OUT/encoders.safetensors` reads
instead of running stage 0 again. The model is built as `lasagna train` builds it, so with the same config the
encoders equal those of the training run's own stage 0.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from lasagna.train.config import load_train_config
from lasagna.train.encoders import pretrain_encoders
from lasagna.train.setup import build_model_and_tokenizer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for encoders.safetensors and encoders.json")
    ap.add_argument("--config", default="configs/train/shapeworld-small.yaml", help="a training config")
    ap.add_argument("--patch-ce", action="store_true", help="add the softmax heads (encoders.patch_ce=true)")
    ap.add_argument("overrides", nargs="*", help="dotted training-config overrides")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = load_train_config(args.config, [*args.overrides, *(["encoders.patch_ce=true"] if args.patch_ce else [])])
    torch.manual_seed(cfg.seed)
    model, _ = build_model_and_tokenizer(cfg)  # as `lasagna train` builds it, so both start from the same weights
    summary = pretrain_encoders(model, cfg.encoders, cfg.data.image_size, cfg.seed, Path(args.out), bf16=cfg.bf16)
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("per_word")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
