"""Give a trained model a grid code (`ModelConfig.image_grid_code`), so that a continuation can learn to use it.

    python scripts/add_grid_code.py --model DIR --out DIR [--width 16]

The new map starts at zero, so the written model answers exactly as the one read; every other tensor is copied as it
is, at its dtype. Continue it with `lasagna train ... init_from=OUT` (model doc, step 28).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from lasagna.checkpoint import load_pretrained, save_pretrained
from lasagna.model.lasagna import LasagnaModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint folder of ours")
    parser.add_argument("--out", type=Path, required=True, help="where the new folder goes (must not exist)")
    parser.add_argument("--width", type=int, default=16, help="width of the code, a positive multiple of 4")
    args = parser.parse_args()
    if args.width <= 0:
        parser.error(f"--width must be positive (0 means no code), got {args.width}")
    model, tokenizer = load_pretrained(args.model)
    if model.image_grid is not None:
        parser.error(f"{args.model} already has a grid code ({model.cfg.image_grid_code} wide)")
    cfg = dataclasses.replace(model.cfg, image_grid_code=args.width)  # checks the width
    grown = LasagnaModel(cfg)
    dtype = next(model.parameters()).dtype
    state = model.state_dict() | {"image_grid.weight": grown.image_grid.weight.detach().to(dtype)}
    grown.load_state_dict(state, strict=True)
    grown.set_token_ids(model.ins_id, model.pad_id)
    save_pretrained(grown.to(dtype), tokenizer, args.out)
    print(f"wrote {args.out}: {args.model} with a {args.width}-wide grid code, its map at zero")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
