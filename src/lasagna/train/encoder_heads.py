"""The throw-away heads of stage 0 (`encoders.py`), their targets and their losses.

Objective, all BCE: a linear head per encoder predicts, for every patch, which *words* of the class names cover it
("red circle" -> red, circle; "sky" -> sky), as soft targets (the fraction of the patch each word covers). Words, so
that a held-out combination such as "red square" is made of features the encoders learned. With `patch_classes` the
heads also predict the whole classes that cover each patch, so that a patch's features already bind "red" to
"circle" and the LLM matches one class direction instead of a conjunction of two words. When the tower keeps its CLS
token, a third head on CLS predicts which classes and words the whole image holds.

With `patch_ce`, each encoder also gets a softmax head that names the one class covering each patch (cross-entropy
against the classes' fractions of the patch, each patch weighted inversely to its class's share of the batch). why:
the balanced BCE lets a head say "circle" on every coloured patch (recall 1.0 for every shape word) while a linear
probe of the features tells the 8 shapes apart at 0.17 (chance 0.125); a softmax must pick one shape, so the features
must hold which.

With `object_ce`, each encoder also gets an object head: the features of the patches an object covers are averaged
(weighted by how much of each patch it covers) and a softmax names the object's class. why: the per-patch heads ask
every patch inside a large shape to know the whole outline, a task these from-scratch encoders barely start on in a
short stage 0 (8-way shape probe 0.23-0.27); pooling asks only that the object's patches *together* carry it, as a
mask decoder or an attention head that gathers them would read it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.lasagna import LasagnaModel
from ..model.mllm import vision_features


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


def head_targets(
    model: LasagnaModel, batch: dict[str, torch.Tensor], words: torch.Tensor, classes: bool, ce: bool
) -> dict[str, torch.Tensor]:
    """What each head of `head_logits` should say about `batch` (`encoders.shapeworld_batch`), by head name."""
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


def head_logits(model: LasagnaModel, heads: EncoderHeads, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every head's logits for `batch` (`encoders.shapeworld_batch`), by head name, objects pooled when it has them."""
    objects = None
    if heads.vision_obj is not None:
        count = batch["object_classes"].shape[1]
        objects = {k: object_weights(batch["instances"], g, count) for k, g in grids(model).items()}
    return heads(model, batch["clip"], batch["sam"], objects)
