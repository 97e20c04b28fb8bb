"""Stage 0 for a model trained from scratch: pretrain the two image encoders on dense labels.

The released LaSagnA starts from a pretrained CLIP tower and a pretrained SAM encoder and keeps both frozen. A model
trained from scratch on ShapeWorld has neither, and learning them only through the LLM's few `<ins>`/`<no_ins>`
decisions fails: the tower keeps the large stuff regions and loses the small shapes (docs/history.md). So
this stage gives both encoders what pretraining gives the real ones: features that name what is in each patch.

Linear heads on the encoders' patches (and on CLIP's CLS) name the words and classes that cover each patch, and with
`patch_ce` / `object_ce` the one class of each patch and of each object (`encoder_heads.py` says why each). The heads
are thrown away afterwards; only the encoders' weights are kept. `eval_every` logs each head's val accuracy during the
stage, so a run shows its learning curve (`encoders.json`, field `curve`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..atomic import write_atomic_file
from ..checkpoint import load_part, save_part
from ..config import ModelConfig, SamConfig, VisionConfig, from_dict, preset, to_dict
from ..model.lasagna import LasagnaModel
from ..preprocess import clip_pixels, sam_pixels
from ..shapeworld import SPLIT_LENGTHS, classes, scene
from ..shapeworld.vocab import class_id
from .encoder_heads import EncoderHeads, head_logits, head_loss, head_targets, word_matrix
from .loop import StepLog, run_steps
from .optim import warmup_linear_decay

log = logging.getLogger(__name__)

ENCODERS_FILE = "encoders.safetensors"
"""Where the pretrained encoders of a run are kept, in the run folder; a resumed run reuses them."""
_PREFIXES = ("vision_tower.", "sam.image_encoder.")
_CONFIGS = {"vision": VisionConfig, "sam": SamConfig}  # ModelConfig field -> type, kept in the file's metadata


@dataclass
class EncoderPretrainConfig:
    steps: int = 0  # 0 = no stage 0 (the encoders start from init_from, or at random)
    from_file: str | None = None  # reuse another run's encoders.safetensors instead of pretraining (ablation rows)
    lr: float = 1e-3
    warmup_steps: int = 50
    batch_size: int = 32
    log_every: int = 50
    patch_classes: bool = False  # patch heads predict whole classes as well as words (see the module docstring)
    patch_ce: bool = False  # softmax heads name the one class covering each patch (see the module docstring)
    object_ce: bool = False  # mask-pooled heads name each object's class (see the module docstring)
    eval_every: int = 0  # also score the heads on val every N steps (0: only at the end)


def shapeworld_batch(split: str, indices: list[int], size: int, model: LasagnaModel) -> dict[str, torch.Tensor]:
    """Scenes -> {"clip", "sam": pixels, "semantic": (B, S, S) class ids, "instances": (B, S, S) object ids,
    "object_classes": (B, K) each object id's class (-1 where a scene has fewer objects)}."""
    scenes = [scene(split, i, size) for i in indices]
    for s in scenes:
        if s.image.shape[0] != s.image.shape[1]:
            raise ValueError("encoder pretraining needs square images (both encoders then see the whole image)")
    pre = model.cfg.preprocess
    object_classes = torch.full((len(scenes), max(1, *(len(s.objects) for s in scenes))), -1)
    for b, s in enumerate(scenes):
        for o in s.objects:  # instance ids are 1..len(objects)
            object_classes[b, o.instance_id - 1] = class_id(split, o.name)
    return {
        "clip": torch.stack([clip_pixels(s.image, pre) for s in scenes]),
        "sam": torch.stack([sam_pixels(s.image, pre)[0] for s in scenes]),
        "semantic": torch.from_numpy(np.stack([s.semantic for s in scenes])),
        "instances": torch.from_numpy(np.stack([s.instances for s in scenes]).astype(np.int64)),
        "object_classes": object_classes,
    }


def pretrain_encoders(
    model: LasagnaModel,
    cfg: EncoderPretrainConfig,
    image_size: int,
    seed: int,
    out: Path | None = None,
    bf16: bool = True,
    progress: bool = True,
) -> dict:
    """Train the vision tower and the SAM image encoder of `model` in place on ShapeWorld `train` scenes.

    Scenes are drawn with a generator of their own (`seed`), so the stage is reproducible and leaves the caller's
    RNGs alone. With `out`, the encoders' weights are written there atomically, with a JSON summary beside them.
    Returns the summary: steps, seconds, final loss, and each head's recall and specificity on 64 `val` scenes,
    overall and per word (accuracy for the softmax and object heads), and with `eval_every` the learning curve.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _pretrain(model, cfg, image_size, seed, out, bf16, progress)


def _pretrain(model, cfg, image_size, seed, out, bf16, progress) -> dict:
    device = next(model.parameters()).device
    words_list, words = word_matrix(list(classes("train")))
    words = words.to(device)
    heads = EncoderHeads(model, words.shape[0], len(words_list), cfg.patch_classes, cfg.patch_ce, cfg.object_ce).to(
        device
    )
    encoders = [model.vision_tower, model.sam.image_encoder]
    for module in encoders:
        module.train()
        module.requires_grad_(True)
    params = [p for m in (*encoders, heads) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(cfg.warmup_steps, cfg.steps))
    rng = np.random.default_rng(seed)
    started, curve = time.perf_counter(), []

    def batch_of(step: int, micro: int) -> dict[str, torch.Tensor]:
        indices = rng.integers(0, SPLIT_LENGTHS["train"], cfg.batch_size).tolist()
        return {k: t.to(device) for k, t in shapeworld_batch("train", indices, image_size, model).items()}

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # why autocast the encoders alone: the targets and the losses stay in float32
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = head_logits(model, heads, batch)
        targets = head_targets(model, batch, words, cfg.patch_classes, cfg.patch_ce)
        return sum(head_loss(k, v.float(), targets[k]) for k, v in logits.items())

    def after_step(done: StepLog) -> None:
        if done.step % cfg.log_every == 0:
            log.info("encoders step %d loss %.4f", done.step, done.values["loss"])
        if cfg.eval_every and done.step % cfg.eval_every == 0 and done.step < cfg.steps:
            scores = _curve_point(model, heads, words, image_size, cfg)
            point = {"step": done.step, "loss": round(done.values["loss"], 4), **scores}
            curve.append(point)
            log.info("encoders %s", point)
            for module in encoders:
                module.train()

    last = run_steps(
        batch_of,
        loss_of,
        params,
        optimizer,
        scheduler,
        steps=cfg.steps,
        desc="encoders",
        progress=progress,
        after_step=after_step,
    )
    summary = {
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "loss": last.values["loss"] if last else float("nan"),
        **_accuracy(model, heads, words, words_list, image_size, cfg.patch_classes),
    }
    if curve:
        summary["curve"] = curve
    if out is not None:
        save_encoders(model, Path(out), summary)
    model.eval()
    return summary


def _curve_point(model, heads, words, size: int, cfg: EncoderPretrainConfig) -> dict:
    """The softmax and object heads' accuracies of _accuracy, with the encoders in eval mode."""
    model.eval()
    scores = _accuracy(model, heads, words, [], size, cfg.patch_classes)
    return {k: v for k, v in scores.items() if k.endswith("accuracy")}


@torch.no_grad()
def _accuracy(model, heads, words, names: list[str], size: int, patch_classes: bool) -> dict:
    """Recall and specificity of every head on 64 `val` scenes (most targets are 0: plain accuracy flatters)."""
    device = words.device
    batch = {k: t.to(device) for k, t in shapeworld_batch("val", list(range(64)), size, model).items()}
    logits = head_logits(model, heads, batch)
    targets = head_targets(model, batch, words, patch_classes, heads.vision_ce is not None)
    result = {}
    for name, value in logits.items():
        if name.endswith("_obj"):
            known = targets[name] >= 0
            hit = (value.argmax(-1) == targets[name]) & known
            result[f"{name}_accuracy"] = round(float(hit.sum() / known.sum().clamp(min=1)), 4)
            continue
        if name.endswith("_ce"):
            result.update(_ce_accuracy(name, value, targets[name], is_thing=words.sum(1) > 1))
            continue
        target, predicted = targets[name] > 0.5, value > 0
        result[f"{name}_recall"] = round(float((predicted & target).sum() / target.sum().clamp(min=1)), 4)
        result[f"{name}_specificity"] = round(float((~predicted & ~target).sum() / (~target).sum()), 4)
        if not names:
            continue
        # per word (the last V outputs of every head): shape words are the rare, hard ones
        hit = (predicted & target).flatten(0, -2)[:, -len(names) :].sum(0)
        total = target.flatten(0, -2)[:, -len(names) :].sum(0).clamp(min=1)
        result[f"{name}_recall_per_word"] = {
            w: round(float(h / t), 3) for w, h, t in zip(names, hit, total, strict=True)
        }
    return result


def _ce_accuracy(name: str, logits: torch.Tensor, fractions: torch.Tensor, is_thing: torch.Tensor) -> dict:
    """Argmax accuracy of a softmax head on the patches one class covers more than half of, and on those of things
    (`is_thing`: (C,) bool; ShapeWorld's colour-shape names have two words, its stuff names one)."""
    top, label = fractions.max(-1)
    clear = top > 0.5
    hit = (logits.argmax(-1) == label) & clear
    thing = clear & is_thing[label]
    return {
        f"{name}_accuracy": round(float(hit.sum() / clear.sum().clamp(min=1)), 4),
        f"{name}_thing_accuracy": round(float((hit & thing).sum() / thing.sum().clamp(min=1)), 4),
    }


def save_encoders(model: LasagnaModel, out: Path, summary: dict) -> Path:
    """The two encoders' weights, with their configs in the file's metadata (so a probe can rebuild them alone)."""
    meta = {key: json.dumps(to_dict(getattr(model.cfg, key))) for key in _CONFIGS}
    path = save_part(model, out / ENCODERS_FILE, _PREFIXES, meta)
    write_atomic_file(out / "encoders.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    return path


def encoder_configs(path: Path) -> tuple[VisionConfig, SamConfig] | None:
    """The vision and SAM configs an encoders file was saved with, or None for a file written without them."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if not set(_CONFIGS) <= set(meta):
        return None
    vision, sam = (from_dict(cls, json.loads(meta[key]), f"{path}:{key}") for key, cls in _CONFIGS.items())
    return vision, sam


def encoders_preset(path: Path | str, name: str = "shapeworld-small") -> ModelConfig:
    """Preset `name` with an encoders file's vision and SAM configs. Files written before the configs were saved
    carry none: each encoder with a plain patch convolution among its weights then gets an empty stem."""
    cfg = preset(name)
    saved = encoder_configs(Path(path))
    if saved:
        cfg.vision, cfg.sam = saved
        return cfg
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    if "vision_tower.embeddings.patch_embedding.weight" in keys:
        cfg.vision.conv_stem = []
    if "sam.image_encoder.patch_embed.projection.weight" in keys:
        cfg.sam.conv_stem = []
    return cfg


def load_encoders(model: LasagnaModel, path: Path) -> None:
    """Strictly load saved encoder weights: exactly the two encoders' keys, with matching shapes."""
    load_part(model, path, _PREFIXES, "encoder")
