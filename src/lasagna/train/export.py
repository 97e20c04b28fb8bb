"""A trained run -> our checkpoint format (`lasagna export`), LoRA merged into the weights it adapts."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..checkpoint import save_pretrained
from ..devices import DTYPES
from ..model.build import configure_trainable, merge_lora
from .config import load_train_config
from .setup import RunWeights, build_run
from .state import checkpoints, load_checkpoint_weights


def export_model(model, tokenizer, out: Path, dtype: str = "bf16", overwrite: bool = True, judges=None) -> Path:
    """Merge LoRA and write our checkpoint format, with the judges beside the model (a copy: the training model
    keeps its adapters)."""
    if dtype not in DTYPES:
        raise ValueError(f"export dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    plain = copy.deepcopy(model)
    merge_lora(plain)
    return save_pretrained(
        plain, tokenizer, out, dtype=getattr(torch, DTYPES[dtype]), overwrite=overwrite, judges=judges
    )


def export_checkpoint(ckpt: str | Path, out: str | Path, dtype: str = "bf16", overwrite: bool = False) -> Path:
    """A run folder (its newest checkpoint) or one checkpoints/step-N folder -> our checkpoint format."""
    ckpt = Path(ckpt)
    run = ckpt if (ckpt / "config.yaml").exists() else ckpt.parent.parent
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{ckpt} is neither a training run folder nor a checkpoints/step-N folder in one")
    step = ckpt if ckpt != run else (checkpoints(run) or [None])[-1]
    if step is None:
        raise FileNotFoundError(f"{run} has no checkpoints/step-* folder")
    cfg = load_train_config(run / "config.yaml")
    model, tokenizer, judges = build_run(cfg, run)
    configure_trainable(model, cfg.trainable)
    if judges is not None:
        judges.configure_training(cfg.judges.trainable)
    load_checkpoint_weights(step, RunWeights(model, judges), cfg.init_from)
    return export_model(model, tokenizer, Path(out), dtype, overwrite=overwrite, judges=judges)
