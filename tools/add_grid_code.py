"""Give a trained model a grid code (`ModelConfig.image_grid_code`), so that a continuation can learn to use it.

    python tools/add_grid_code.py --model DIR --out DIR [--width 16]

The grid code adds a learned code of each image token's place to the image tokens the LLM reads (what
`loss.place_against: grid` needs). Its map starts at zero, so the written model answers exactly as the one read; every
other tensor is copied as it is, at its own dtype, and the map takes the image projector's. Continue it with
`lasagna train ... init_from=OUT`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from lasagna.api import Lasagna
from lasagna.checkpoint import build_from_state, read_config, save_pretrained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint folder of ours")
    parser.add_argument("--out", type=Path, required=True, help="where the new folder goes (must not exist)")
    parser.add_argument("--width", type=int, default=16, help="width of the code, a positive multiple of 4")
    args = parser.parse_args(argv)
    if args.width <= 0:
        parser.error(f"--width must be positive (0 means no code), got {args.width}")
    cfg = read_config(args.model)
    if cfg.image_grid_code:
        parser.error(f"{args.model} already has a grid code ({cfg.image_grid_code} wide)")
    try:
        cfg = dataclasses.replace(cfg, image_grid_code=args.width)  # ModelConfig checks the width
    except ValueError as err:
        parser.error(str(err))
    with torch.no_grad():
        source = Lasagna.from_pretrained(args.model)  # its judges and vocabulary travel to the new folder
        model, tokenizer = source.model, source.tokenizer
        dtype = next(model.projector.parameters()).dtype  # the map adds to the projector's output
        zero_map = torch.zeros(cfg.llm.hidden_size, args.width, dtype=dtype)
        grown = build_from_state(cfg, model.state_dict() | {"image_grid.weight": zero_map}, str(args.model))
        grown.set_token_ids(model.ins_id, model.pad_id, model.no_ins_id)
        save_pretrained(grown, tokenizer, args.out, judges=source.judges, about=source.header)
    print(f"wrote {args.out}: {args.model} with a {args.width}-wide grid code, its map at zero")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
