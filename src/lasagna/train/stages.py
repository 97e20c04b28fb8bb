"""What a run does besides its main loop: before it, stages 0 and 0b pretrain the encoders and SAM's decoder of a
model trained from scratch (once, on ShapeWorld; `encoders.py`, `decoder.py`), or read them from another run's files;
after it, the judges' fusions are fit on held-out scenes (`judges/calibrate.py`)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from .config import TrainConfig
from .decoder import DECODER_FILE, load_decoder, pretrain_decoder
from .encoders import ENCODERS_FILE, load_encoders, pretrain_encoders

log = logging.getLogger(__name__)


def pretrain(cfg: TrainConfig, accelerator, model, out: Path) -> None:
    """Stage 0 (the image encoders), then stage 0b (SAM's decoder on the frozen encoders), each from its file or
    pretrained here when it has steps; on every rank."""
    size, seed, bf16 = cfg.data.image_size, cfg.seed, cfg.bf16
    if cfg.encoders.from_file:
        load_encoders(model, Path(cfg.encoders.from_file))
    elif cfg.encoders.steps > 0:
        run = lambda: pretrain_encoders(model, cfg.encoders, size, seed, out, bf16=bf16)  # noqa: E731
        _pretrain_once(cfg, accelerator, model, out / ENCODERS_FILE, load_encoders, "encoders", run)
    if cfg.decoder.from_file:
        load_decoder(model, Path(cfg.decoder.from_file))
    elif cfg.decoder.steps > 0:
        run = lambda: pretrain_decoder(model, cfg.decoder, cfg.loss, size, seed, out, bf16=bf16)  # noqa: E731
        _pretrain_once(cfg, accelerator, model, out / DECODER_FILE, load_decoder, "decoder", run)


def _pretrain_once(
    cfg: TrainConfig, accelerator, model, path: Path, load: Callable, section: str, run: Callable[[], dict]
) -> None:
    """Run a pretraining stage (`run`, which writes `path`) on the main process unless the run folder already holds
    its output (a resume), then load that output on every rank."""
    if cfg.data.dataset != "shapeworld":
        raise ValueError(f"{section}.steps > 0 pretrains on ShapeWorld; set it to 0 for other datasets")
    if accelerator.is_main_process and not path.exists():
        model.to(accelerator.device)
        log.info("%s pretrained: %s", section, run())
    accelerator.wait_for_everyone()
    load(model, path)


def unwrapped(accelerator, judges):
    """The judges as built, from accelerate's wrapper (None stays None)."""
    return None if judges is None else accelerator.unwrap_model(judges)


def calibrate(cfg: TrainConfig, accelerator, model, judges, tokenizer, step: int, metrics_log) -> None:
    """Fit the judges' fusions on the first `calibrate_scenes` of the eval split (`judges/calibrate.py`).

    Every rank fits them on the same scenes, so the replicas stay identical."""
    from ..api import Lasagna
    from ..eval.evaluate import open_eval_sources

    inner, judges = accelerator.unwrap_model(model), unwrapped(accelerator, judges)
    if judges is None or (judges.verifier is None and judges.query_verifier is None) or cfg.calibrate_scenes <= 0:
        return
    from ..judges.calibrate import calibrate_model

    sources = open_eval_sources(cfg.data.dataset, cfg.eval.split, cfg.data.root)
    inner.eval()
    mixed = accelerator.autocast() if cfg.frozen_dtype == "bf16" else contextlib.nullcontext()
    try:
        with mixed, torch.compiler.set_stance("force_eager"):
            reports = calibrate_model(
                Lasagna(inner, tokenizer, judges), sources, cfg.calibrate_scenes, cfg.eval.chunk_size, False
            )
    except ValueError as e:
        raise ValueError(f"calibrate_scenes: {cfg.data.dataset} {cfg.eval.split}: {e}") from e
    inner.train()
    judges.train()
    for name, report in reports.items():
        key = "calibration" if name == "presence" else f"{name}_calibration"
        if metrics_log is not None:
            metrics_log.write(json.dumps({"step": step, key: report}) + "\n")
            metrics_log.flush()
            log.info("step %d %s %s", step, key.replace("_", " "), report)


def evaluate(cfg: TrainConfig, accelerator, model, judges, tokenizer, step: int, metrics_log) -> None:
    """Score the model on `eval.limit` ShapeWorld scenes of the eval split with the code of `lasagna eval`, split
    across the ranks, and log the report."""
    from ..api import Lasagna
    from ..eval.evaluate import evaluate_model

    if cfg.data.dataset != "shapeworld" or cfg.eval.limit <= 0:
        return
    inner, judges = accelerator.unwrap_model(model), unwrapped(accelerator, judges)
    inner.eval()
    # why: bf16 frozen weights beside fp32 trainable ones run only under autocast, as in training
    mixed = accelerator.autocast() if cfg.frozen_dtype == "bf16" else contextlib.nullcontext()
    # why: generation's cached steps would each compile anew (`compile`); evaluation is short, eager is enough
    with mixed, torch.compiler.set_stance("force_eager"):
        report = evaluate_model(
            Lasagna(inner, tokenizer, judges),
            "shapeworld",
            cfg.eval.split,
            limit=cfg.eval.limit,
            chunk_size=cfg.eval.chunk_size,
            rank=accelerator.process_index,
            world=accelerator.num_processes,
            reduce=accelerator.reduce,
            progress=False,
            tasks=("semantic", "referring"),  # why not reasoning: the periodic check stays as cheap as it was
        )
    inner.train()
    if judges is not None:
        judges.train()
    if metrics_log is not None:
        metrics_log.write(json.dumps({"step": step, "eval": report}) + "\n")
        metrics_log.flush()
        log.info("step %d eval %s", step, report)
