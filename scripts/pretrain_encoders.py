"""Stage 0 alone: pretrain a fresh `shapeworld-small` model's encoders and save them, to measure them before a run.

    python scripts/pretrain_encoders.py --out runs/enc-ce [--steps 800] [--patch-ce] [--seed 0]

Uses the default recipe's stage-0 settings (configs/train/shapeworld-small.yaml: 800 steps of 32 scenes, lr 1e-3,
class-naming patch heads) and writes OUT/encoders.safetensors and OUT/encoders.json, which `lasagna train ...
encoders.from_file=OUT/encoders.safetensors` and `scripts/word_probe.py --encoders` read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.train.encoders import EncoderPretrainConfig, pretrain_encoders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--patch-ce", action="store_true", help="add the softmax heads (encoders.patch_ce)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = LasagnaModel(preset("shapeworld-small"))
    cfg = EncoderPretrainConfig(steps=args.steps, batch_size=32, lr=1e-3, patch_classes=True, patch_ce=args.patch_ce)
    summary = pretrain_encoders(model, cfg, 128, args.seed, Path(args.out))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("per_word")}, indent=1))


if __name__ == "__main__":
    main()
