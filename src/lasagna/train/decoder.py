"""Stage 0b for a model trained from scratch: pretrain SAM's prompt encoder and mask decoder.

The released LaSagnA prompts a SAM mask decoder that had learned to draw masks before the LLM ever spoke to it. A
decoder trained from scratch in stage 1 must learn to draw masks and to read its prompt at once, from prompts that
name nothing at first (the LLM starts at random). With the stem's finer maps (`sam.stem_skips`) that went wrong: the
decoder settled on colour regions drawn from the fine maps and never learned shapes from the prompt
(docs/history.md), though on the same frozen encoders a decoder prompted by one learned embedding
per class drew better shape masks with the skips than without (docs/history.md).

So this stage gives the decoder SAM's head start, on the frozen stage-0 SAM encoder: a learned prompt per class (one
sparse token, as each `<ins>` gives in stage 1) asks for every class present in ShapeWorld `train` scenes, under
stage 1's mask loss (`loss.bce_weight` BCE + `loss.dice_weight` Dice per mask). The prompt table is thrown away; the
prompt encoder, the mask decoder and the stem skips are kept (DECODER_FILE in the run folder) and train on in stage 1,
where the text projector learns to say what the table said.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import write_atomic_file
from ..checkpoint import load_part, save_part
from ..losses import LossConfig, mask_bce_sum, mask_dice_sum
from ..model.lasagna import LasagnaModel
from ..preprocess import sam_pixels
from ..shapeworld import SPLIT_LENGTHS, STUFF, classes, scene
from .loop import StepLog, run_steps
from .optim import warmup_linear_decay

log = logging.getLogger(__name__)

DECODER_FILE = "decoder.safetensors"
"""Where a run keeps its pretrained decoder, beside the encoders; a resumed run reuses it."""
_PREFIXES = ("sam.prompt_encoder.", "sam.mask_decoder.", "sam.stem_skips.")
EVAL_SCENES = 40  # val scenes of the summary's present-only IoUs


@dataclass
class DecoderPretrainConfig:
    steps: int = 0  # 0 = no decoder pretraining (stage 1 starts the decoder at random)
    from_file: str | None = None  # reuse another run's decoder.safetensors instead of pretraining (ablation rows)
    lr: float = 1e-3
    warmup_steps: int = 100
    batch_size: int = 8
    log_every: int = 50


def _modules(model: LasagnaModel) -> list[nn.Module]:
    sam = model.sam
    return [m for m in (sam.prompt_encoder, sam.mask_decoder, sam.stem_skips) if m is not None]


def pretrain_decoder(
    model: LasagnaModel,
    cfg: DecoderPretrainConfig,
    loss: LossConfig,
    image_size: int,
    seed: int,
    out: Path | None = None,
    bf16: bool = True,
    progress: bool = True,
) -> dict:
    """Train `model`'s SAM prompt encoder, mask decoder (and stem skips) in place; the image encoder stays frozen.

    Scenes come from a generator of their own (`seed`), and the caller's RNGs are left alone. With `out`, the weights
    are written there atomically with a JSON summary beside them. Returns the summary: steps, seconds, final loss and
    present-only IoUs on the first EVAL_SCENES `val` scenes (stuff, colour-shape classes, and the latter split by
    whether another object in the scene shares the colour).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _pretrain(model, cfg, loss, image_size, seed, out, bf16, progress)


def _pretrain(model, cfg, loss_cfg, image_size, seed, out, bf16, progress) -> dict:
    device = next(model.parameters()).device
    table = nn.Parameter(torch.randn(len(classes("train")), model.cfg.sam.prompt_dim, device=device) * 0.02)
    modules = _modules(model)
    model.sam.image_encoder.eval()
    for module in modules:
        module.train()
        module.requires_grad_(True)
    params = [table, *(p for m in modules for p in m.parameters())]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(cfg.warmup_steps, cfg.steps))
    rng = np.random.default_rng(seed)
    started = time.perf_counter()

    def batch_of(step: int, micro: int) -> list:
        indices = rng.integers(0, SPLIT_LENGTHS["train"], cfg.batch_size).tolist()
        return [scene("train", i, image_size) for i in indices]

    def loss_of(scenes: list) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            bce, dice, count = _mask_losses(model, table, scenes)
        return (loss_cfg.bce_weight * bce + loss_cfg.dice_weight * dice) / max(count, 1)

    def after_step(done: StepLog) -> None:
        if done.step % cfg.log_every == 0:
            log.info("decoder step %d loss %.4f", done.step, done.values["loss"])

    last = run_steps(
        batch_of,
        loss_of,
        params,
        optimizer,
        scheduler,
        steps=cfg.steps,
        desc="decoder",
        progress=progress,
        after_step=after_step,
    )
    model.eval()
    summary = {
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "loss": last.values["loss"] if last else float("nan"),
        **present_only_iou(model, table.detach(), image_size, bf16),
    }
    if out is not None:
        save_decoder(model, Path(out), summary)
    return summary


def _embed(model: LasagnaModel, scenes) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[int, int]]:
    """The frozen SAM encoder's embeddings and stem maps of square scenes, and the size SAM resized them to."""
    device = next(model.parameters()).device
    prepared = [sam_pixels(s.image, model.cfg.preprocess) for s in scenes]
    pixels = torch.stack([p for p, _ in prepared]).to(device)
    with torch.no_grad():
        return model.sam.embed_images(pixels), model.sam.skip_maps(pixels), prepared[0][1]


def _present(label: np.ndarray, count: int) -> list[int]:
    return [int(k) for k in np.unique(label) if k < count]


def _class_logits(model: LasagnaModel, table: torch.Tensor, scenes):
    """For each scene: (its present class ids, (N, S, S) mask logits for them, prompted by the table's rows)."""
    embeds, skips, resized = _embed(model, scenes)
    ids = [_present(s.semantic, table.shape[0]) for s in scenes]
    image = torch.tensor([i for i, scene_ids in enumerate(ids) for _ in scene_ids], device=embeds.device)
    prompts = table[[k for scene_ids in ids for k in scene_ids]]
    sizes = [s.semantic.shape for s in scenes]
    logits = model.sam.decode_each(embeds, skips, prompts, image, [resized] * len(scenes), sizes)[0]
    yield from zip(ids, logits, strict=True)


def _mask_losses(model: LasagnaModel, table: torch.Tensor, scenes) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed BCE and Dice over every present class of every scene, and the number of masks."""
    bce = dice = table.sum() * 0.0
    count = 0
    for (ids, logits), s in zip(_class_logits(model, table, scenes), scenes, strict=True):
        truth = torch.from_numpy(np.stack([s.semantic == k for k in ids])).to(logits.device)
        bce = bce + mask_bce_sum(logits, truth, None)
        dice = dice + mask_dice_sum(logits, truth, None)
        count += len(ids)
    return bce, dice, count


@torch.no_grad()
def present_only_iou(model: LasagnaModel, table: torch.Tensor, image_size: int, bf16: bool = True) -> dict:
    """Mean IoU of each present class's mask on the first EVAL_SCENES `val` scenes, by kind of class."""
    names = classes("train")
    rows: dict[str, list[float]] = {"stuff": [], "shape": [], "shape_alone_in_colour": [], "shape_colour_shared": []}
    device = next(model.parameters()).device
    for i in range(EVAL_SCENES):
        s = scene("val", i, image_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            ((ids, logits),) = _class_logits(model, table, [s])
        colours = [names[k].split()[0] for k in ids if names[k] not in STUFF]
        for k, mask in zip(ids, logits.float() > 0, strict=True):
            truth = torch.from_numpy(s.semantic == k).to(device)
            iou = float((mask & truth).sum() / (mask | truth).sum().clamp(min=1))
            if names[k] in STUFF:
                rows["stuff"].append(iou)
                continue
            rows["shape"].append(iou)
            shared = colours.count(names[k].split()[0]) > 1
            rows["shape_colour_shared" if shared else "shape_alone_in_colour"].append(iou)
    return {f"val_{key}_iou": round(float(np.mean(v)), 4) if v else None for key, v in rows.items()}


def save_decoder(model: LasagnaModel, out: Path, summary: dict) -> Path:
    path = save_part(model, out / DECODER_FILE, _PREFIXES)
    write_atomic_file(out / "decoder.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return path


def load_decoder(model: LasagnaModel, path: Path) -> None:
    """Strictly load a pretrained decoder: exactly the prompt encoder's, mask decoder's and stem skips' keys."""
    load_part(model, path, _PREFIXES, "decoder")
