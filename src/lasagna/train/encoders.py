"""Stage 0 for a model trained from scratch: pretrain the two image encoders on dense labels.

The released LaSagnA starts from a pretrained CLIP tower and a pretrained SAM encoder and keeps both frozen. A model
trained from scratch on ShapeWorld has neither, and learning them only through the LLM's few `<ins>`/`<no_ins>`
decisions fails: the tower keeps the large stuff regions and loses the small shapes (docs/history.md). So
this stage gives both encoders what pretraining gives the real ones: features that name what is in each patch.

Objective, all BCE: a linear head per encoder predicts, for every patch, which *words* of the class names cover it
("red circle" -> red, circle; "sky" -> sky), as soft targets (the fraction of the patch each word covers). Words, so
that a held-out combination such as "red square" is made of features the encoders learned. With `patch_classes` the
heads also predict the whole classes that cover each patch, so that a patch's features already bind "red" to
"circle" and the LLM matches one class direction instead of a conjunction of two words. When the tower keeps its CLS
token, a third head on CLS predicts which classes and words the whole image holds. The heads are thrown away
afterwards; only the encoders' weights are kept.

With `patch_ce`, each encoder also gets a softmax head that names the one class covering each patch (cross-entropy
against the classes' fractions of the patch, each patch weighted inversely to its class's share of the batch). why:
the balanced BCE lets a head say "circle" on every coloured patch (recall 1.0 for every shape word) while a linear
probe of the features tells the 8 shapes apart at 0.17 (chance 0.125); a softmax must pick one shape, so the features
must hold which.

With `object_ce`, each encoder also gets an object head: the features of the patches an object covers are averaged
(weighted by how much of each patch it covers) and a softmax names the object's class. why: the per-patch heads ask
every patch inside a large shape to know the whole outline, a task these from-scratch encoders barely start on in a
short stage 0 (8-way shape probe 0.23-0.27); pooling asks only that the object's patches *together* carry it, as a
mask decoder or an attention head that gathers them would read it. `eval_every` logs each head's val accuracy during
the stage, so a run shows its learning curve (`encoders.json`, field `curve`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn
from tqdm.auto import tqdm

from ..atomic import write_atomic_file
from ..checkpoint import load_part, save_part
from ..config import ModelConfig, SamConfig, VisionConfig, from_dict, preset, to_dict
from ..model.lasagna import LasagnaModel
from ..model.mllm import vision_features
from ..preprocess import clip_pixels, sam_pixels
from ..shapeworld import SPLIT_LENGTHS, classes, scene
from ..shapeworld.vocab import class_id

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


def warmup_linear_decay(warm: int, total: int):
    """LR factor: linear warmup from 0 over `warm` steps, then linear decay to 0 at `total` (the released
    WarmupDecayLR); both training stages use it."""

    def factor(step: int) -> float:
        if warm and step < warm:
            return step / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def optimizer_step(loss: torch.Tensor, params, optimizer, scheduler) -> float:
    """Backward, clip the gradient norm at 1.0, step and clear; returns the loss value (both pretraining stages)."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def word_matrix(class_names: list[str]) -> tuple[list[str], torch.Tensor]:
    """Class names -> (the sorted words, a (C, V) 0/1 matrix saying which words each class name has)."""
    words = sorted({w for name in class_names for w in name.split()})
    index = {w: i for i, w in enumerate(words)}
    matrix = torch.zeros(len(class_names), len(words))
    for c, name in enumerate(class_names):
        for w in name.split():
            matrix[c, index[w]] = 1.0
    return words, matrix


def cell_shares(labels: torch.Tensor, count: int, grid: int) -> torch.Tensor:
    """(B, H, W) integer labels in [0, count) -> (B, grid*grid, count): the fraction of each of the grid x grid
    cells each label covers (rows sum to 1). H and W must be multiples of grid.

    why: counted with one bincount; pooling a one-hot map did the same sums over a (B, count, H, W) float tensor
    and took a quarter of each stage-0 step."""
    b, h, w = labels.shape
    if h % grid or w % grid:
        raise ValueError(f"a {h} x {w} label map does not split into {grid} x {grid} equal cells")
    rows = torch.arange(h, device=labels.device) // (h // grid)
    cols = torch.arange(w, device=labels.device) // (w // grid)
    cell = torch.arange(b, device=labels.device)[:, None, None] * grid * grid + rows[:, None] * grid + cols[None, :]
    counts = torch.bincount((cell * count + labels).flatten(), minlength=b * grid * grid * count)
    return counts.reshape(b, grid * grid, count).float() / ((h // grid) * (w // grid))


def class_fractions(semantic: torch.Tensor, num_classes: int, grid: int) -> torch.Tensor:
    """(B, S, S) class ids -> (B, grid*grid, C): the fraction of each patch each class covers (rows sum to 1)."""
    return cell_shares(semantic, num_classes, grid)


def patch_targets(semantic: torch.Tensor, words: torch.Tensor, grid: int, with_classes: bool = False) -> torch.Tensor:
    """(B, S, S) class ids, (C, V) word matrix -> (B, grid*grid, V) fraction of each patch each word covers;
    with_classes: (B, grid*grid, C + V), the fraction each class covers first."""
    return _word_targets(class_fractions(semantic, words.shape[0], grid), words, with_classes)


def _word_targets(fractions: torch.Tensor, words: torch.Tensor, with_classes: bool) -> torch.Tensor:
    """(B, P, C) class fractions -> patch_targets' (B, P, V), or (B, P, C + V) with_classes."""
    per_word = (fractions @ words).clamp(max=1.0)
    return torch.cat([fractions, per_word], dim=-1) if with_classes else per_word


def image_targets(semantic: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """(B, S, S) class ids, (C, V) word matrix -> (B, C + V): which classes, and which words, the image holds."""
    present = torch.zeros(semantic.shape[0], words.shape[0], device=semantic.device)
    present.scatter_(1, semantic.flatten(1), 1.0)
    return torch.cat([present, (present @ words).clamp(max=1.0)], dim=1)


MAX_POS_WEIGHT = 50.0


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with each output's positives weighted by its negative/positive ratio in the batch (capped).

    why: a shape covers a few patches and the stuff bands the rest, so plain BCE learns stuff and leaves every shape
    word at "absent" (a probe of such encoders finds no shape word at all).
    """
    flat = targets.reshape(-1, targets.shape[-1])
    pos = flat.sum(0)
    weight = ((flat.shape[0] - pos) / pos.clamp(min=1.0)).clamp(1.0, MAX_POS_WEIGHT)
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight)


class EncoderHeads(nn.Module):
    """The throw-away linear heads: CLIP patches, SAM cells -> word (and class) logits; CLIP's CLS -> class logits.

    The CLS head names whole classes, "red circle" and not just red and circle, so one token the LLM reads at a
    fixed place says which of the training classes the image holds.
    """

    def __init__(
        self,
        model: LasagnaModel,
        num_classes: int,
        num_words: int,
        patch_classes: bool = False,
        ce: bool = False,
        objects: bool = False,
    ):
        super().__init__()
        per_patch = num_words + (num_classes if patch_classes else 0)
        self.vision = nn.Linear(model.cfg.vision.hidden_size, per_patch)
        self.sam = nn.Conv2d(model.cfg.sam.prompt_dim, per_patch, kernel_size=1)
        self.cls = (
            None if model.cfg.vision.drop_cls else nn.Linear(model.cfg.vision.hidden_size, num_classes + num_words)
        )
        self.vision_ce = nn.Linear(model.cfg.vision.hidden_size, num_classes) if ce else None
        self.sam_ce = nn.Conv2d(model.cfg.sam.prompt_dim, num_classes, kernel_size=1) if ce else None
        self.vision_obj = nn.Linear(model.cfg.vision.hidden_size, num_classes) if objects else None
        self.sam_obj = nn.Linear(model.cfg.sam.prompt_dim, num_classes) if objects else None

    def forward(
        self, model: LasagnaModel, clip: torch.Tensor, sam: torch.Tensor, objects: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """-> {"vision": (B, P_clip, V), "sam": (B, P_sam, V), "cls": (B, C + V) when CLS is kept,
        "vision_ce": (B, P_clip, C), "sam_ce": (B, P_sam, C) with ce, "vision_obj", "sam_obj": (B, K, C) with
        objects} logits. `objects`: {"vision": (B, K, P_clip), "sam": (B, K, P_sam)} each object's share of each
        patch (object_weights)."""
        feats = vision_features(model.vision_tower, model.cfg.vision, clip)
        embedded = model.sam.embed_images(sam)
        patches = feats if self.cls is None else feats[:, 1:]
        cells = embedded.flatten(2).transpose(1, 2)
        out = {"vision": self.vision(patches), "sam": self.sam(embedded).flatten(2).transpose(1, 2)}
        if self.cls is not None:
            out["cls"] = self.cls(feats[:, 0])
        if self.vision_ce is not None:
            out["vision_ce"] = self.vision_ce(patches)
            out["sam_ce"] = self.sam_ce(embedded).flatten(2).transpose(1, 2)
        if self.vision_obj is not None and objects is not None:
            out["vision_obj"] = self.vision_obj(pool_objects(patches, objects["vision"]))
            out["sam_obj"] = self.sam_obj(pool_objects(cells, objects["sam"]))
        return out


def object_weights(instances: torch.Tensor, grid: int, count: int) -> torch.Tensor:
    """(B, S, S) instance ids (0: none, 1..count: objects) -> (B, count, grid*grid): the fraction of each patch
    each object covers."""
    return cell_shares(instances, count + 1, grid).transpose(1, 2)[:, 1:]


def pool_objects(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, P, D) patch features, (B, K, P) object shares -> (B, K, D): each object's share-weighted mean feature
    (zeros for an object id a scene does not have)."""
    weights = weights.to(features.dtype)
    return (weights @ features) / weights.sum(-1, keepdim=True).clamp(min=1e-6)


def grids(model: LasagnaModel) -> dict[str, int]:
    """The side of each encoder's patch grid: {"vision": CLIP patches, "sam": SAM cells}."""
    return {"vision": model.cfg.vision.grid, "sam": model.cfg.sam.embedding_size}


def _targets(
    model: LasagnaModel, batch: dict[str, torch.Tensor], words: torch.Tensor, classes: bool, ce: bool
) -> dict[str, torch.Tensor]:
    targets = {"cls": image_targets(batch["semantic"], words)}
    for name, grid in grids(model).items():
        fractions = class_fractions(batch["semantic"], words.shape[0], grid)  # once per grid: the softmax heads too
        targets[name] = _word_targets(fractions, words, classes)
        if ce:
            targets[f"{name}_ce"] = fractions
        targets[f"{name}_obj"] = batch["object_classes"]
    return targets


def balanced_ce(logits: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Soft-target cross-entropy in which each patch counts inversely to how many patches of the batch share its
    majority class (capped at MAX_POS_WEIGHT times the weight of a class covering every patch). why: stuff covers
    most patches, and a plain mean lets the heads name stuff well and leave the 52 shapes apart at chance."""
    flat, target = logits.flatten(0, -2), fractions.flatten(0, -2)
    label = target.argmax(-1)
    counts = torch.bincount(label, minlength=target.shape[-1]).float()
    weight = (1.0 / counts[label]).clamp(max=MAX_POS_WEIGHT / len(label))
    per_patch = F.cross_entropy(flat, target, reduction="none")
    return (weight * per_patch).sum() / weight.sum()


def head_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy over the objects a batch has for the object heads (`*_obj`; target -1: no object),
    balanced soft-target cross-entropy for the softmax heads (`*_ce`), balanced BCE for the others."""
    if name.endswith("_obj"):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)
    if name.endswith("_ce"):
        return balanced_ce(logits, target)
    return balanced_bce(logits, target)


def _shapeworld_batch(split: str, indices: list[int], size: int, model: LasagnaModel) -> dict[str, torch.Tensor]:
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


def _logits(model: LasagnaModel, heads: EncoderHeads, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    objects = None
    if heads.vision_obj is not None:
        count = batch["object_classes"].shape[1]
        objects = {k: object_weights(batch["instances"], g, count) for k, g in grids(model).items()}
    return heads(model, batch["clip"], batch["sam"], objects)


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
    started, loss_value, curve = time.perf_counter(), float("nan"), []
    bar = tqdm(range(cfg.steps), desc="encoders", disable=not progress)
    for step in bar:
        indices = rng.integers(0, SPLIT_LENGTHS["train"], cfg.batch_size).tolist()
        batch = {k: t.to(device) for k, t in _shapeworld_batch("train", indices, image_size, model).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = _logits(model, heads, batch)
        targets = _targets(model, batch, words, cfg.patch_classes, cfg.patch_ce)
        loss = sum(head_loss(k, v.float(), targets[k]) for k, v in logits.items())
        loss_value = optimizer_step(loss, params, optimizer, scheduler)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if (step + 1) % cfg.log_every == 0:
            log.info("encoders step %d loss %.4f", step + 1, loss_value)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            scores = _curve_point(model, heads, words, image_size, cfg)
            point = {"step": step + 1, "loss": round(loss_value, 4), **scores}
            curve.append(point)
            log.info("encoders %s", point)
            for module in encoders:
                module.train()
    summary = {
        "steps": cfg.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "loss": loss_value,
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
    batch = {k: t.to(device) for k, t in _shapeworld_batch("val", list(range(64)), size, model).items()}
    logits = _logits(model, heads, batch)
    targets = _targets(model, batch, words, patch_classes, heads.vision_ce is not None)
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
