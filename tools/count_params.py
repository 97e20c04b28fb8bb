"""Trainable and frozen parameters of a training config's model, built on the meta device (no memory, no weights).

    python tools/count_params.py configs/train/lasagna-7b.yaml --preset lasagna-7b

Prints the counts and what they weigh: trainable in fp32 (the tensors of a `checkpoint_weights: trainable`
checkpoint), frozen in fp32 and in bf16 (`frozen_dtype`). The vocabulary is the preset's (LLaMA's 32k rows for
lasagna-7b).
"""

from __future__ import annotations

import argparse

import torch

from lasagna.config import preset
from lasagna.model.build import configure_trainable
from lasagna.model.lasagna import LasagnaModel
from lasagna.train.config import load_train_config
from lasagna.train.setup import apply_overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a training config (configs/train/*.yaml)")
    ap.add_argument(
        "--preset",
        help="model preset (default: the config's model_preset; a config with init_from names none, so give the "
        "preset of the checkpoint it starts from)",
    )
    args = ap.parse_args(argv)
    cfg = load_train_config(args.config)
    model_cfg = apply_overrides(preset(args.preset or cfg.model_preset), cfg.model_overrides)
    with torch.device("meta"):  # why: shapes only, so a 7B model is counted in a second without its memory
        model = LasagnaModel(model_cfg)
    counts = configure_trainable(model, cfg.trainable)
    t, f = counts["trainable"], counts["frozen"]
    print(f"trainable {t:,} ({t * 4 / 1e9:.2f} GB fp32)")
    print(f"frozen {f:,} ({f * 4 / 1e9:.2f} GB fp32, {f * 2 / 1e9:.2f} GB bf16)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
