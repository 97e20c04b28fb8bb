"""Training losses, computed outside `forward`: 1.0 * CE + 2.0 * BCE + 0.5 * Dice (the released recipe).

Normalisation follows the released code: CE is the mean over supervised tokens; BCE is a per-mask mean over pixels,
Dice a per-mask soft Dice (sums scaled by 1/1000, eps 1e-6); both summed over masks and divided by the number of
masks in the batch. A batch with no masks has mask losses of exactly 0. Pixels marked ignore are left out of both.

One addition, off by default: `decision_weight` counts each `<ins>`/`<no_ins>` label that many times in the CE mean
(a weighted mean, so 1.0 is exactly the released CE). A model trained from scratch uses it to make the presence
decisions, a third of its answer tokens, outweigh the mask losses that otherwise steer its LLM.

Another, off by default: `place_weight` adds `place_ce`, where the state before each `<ins>` points among its image's
tokens (`place_against: tokens`) or among the model's code of each token's place (`grid`), against the target mask
pooled to the token grid. It asks the LLM to know where what it answers is, which a pretrained LLaVA brings and one
trained from scratch never learned: the mask decoder finds the target without it (docs/history.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .tokens import IGNORE_INDEX, IMAGE_TOKEN_ID

DICE_SCALE = 1000.0
DICE_EPS = 1e-6


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    decision_weight: float = 1.0  # CE weight of <ins>/<no_ins> labels; 1.0 = the released plain mean
    place_weight: float = 0.0  # weight of place_ce; 0 = the released recipe
    # what place_ce points at: "tokens", the image tokens' last-layer states, or "grid", the model's code of each
    # token's place (ModelConfig.image_grid_code), so the state itself must hold where its target is
    place_against: Literal["tokens", "grid"] = "tokens"

    def __post_init__(self) -> None:
        if self.place_against not in ("tokens", "grid"):
            raise ValueError(f"loss.place_against must be 'tokens' or 'grid', got {self.place_against!r}")
        if self.place_weight < 0:
            raise ValueError(f"loss.place_weight must be >= 0, got {self.place_weight}")


@dataclass
class LossParts:
    total: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    num_masks: int
    place: torch.Tensor | None = None


def token_ce(
    logits: torch.Tensor, labels: torch.Tensor, weighted_ids: tuple[int, ...] = (), weight: float = 1.0
) -> torch.Tensor:
    """Next-token CE: logits (B, L, V) at t predict labels at t+1; mean over labels != IGNORE_INDEX (0 if none).

    Labels in `weighted_ids` count `weight` times in the mean.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    supervised = shift_labels != IGNORE_INDEX
    if not bool(supervised.any()):
        return shift_logits.sum() * 0.0
    per_token = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(shift_labels.shape)
    w = supervised.float()
    if weight != 1.0 and weighted_ids:
        w = torch.where(torch.isin(shift_labels, torch.tensor(weighted_ids, device=w.device)), weight * w, w)
    return (per_token * w).sum() / w.sum()


def mask_bce_sum(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Sum over masks of the per-mask mean BCE. logits/targets: (N, H, W); valid: (H, W) bool or None."""
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    if valid is None:
        return loss.flatten(1).mean(1).sum()
    weight = valid.to(loss.dtype)
    return ((loss * weight).flatten(1).sum(1) / weight.sum().clamp_min(1.0)).sum()


def mask_dice_sum(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Sum over masks of the soft Dice loss 1 - (2 I/s + eps) / (P/s + T/s + eps), s = DICE_SCALE."""
    probs = logits.sigmoid().flatten(1)
    t = targets.to(probs.dtype).flatten(1)
    if valid is not None:
        w = valid.to(probs.dtype).flatten()[None]
        probs, t = probs * w, t * w
    inter = 2 * (probs * t).sum(1) / DICE_SCALE
    denom = probs.sum(1) / DICE_SCALE + t.sum(1) / DICE_SCALE
    return (1 - (inter + DICE_EPS) / (denom + DICE_EPS)).sum()


def place_ce(
    hidden: torch.Tensor,
    ids: torch.Tensor,
    ins_id: int,
    image_index: torch.Tensor,
    gt_masks: list[torch.Tensor],
    grid: int,
    skip: int,
    cells: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over `<ins>` of the CE between where its state points and where its target is.

    hidden / ids: (B, L', D) last-layer states and (B, L') ids of the expanded batch (image tokens carry
    IMAGE_TOKEN_ID); image_index: (B,) each row's image; gt_masks: per image (N_i, H, W) in `<ins>` order. The state
    before each `<ins>` scores its row's image tokens by scaled dot product (the first `skip` are not on the grid:
    CLS); the target is its mask's share of each cell of the `grid` x `grid` token grid, summing to 1. Masks with no
    pixel are left out; 0 (with a gradient path) when nothing is left. cells: (grid * grid, D) vectors to point at
    instead, the same for every slot (a code of each cell's place). why: the grid is the tower's over the whole
    image, which holds for a square image resized as it is (ShapeWorld)."""
    image = ids == IMAGE_TOKEN_ID
    tokens = image.sum(1)
    if not bool((tokens == skip + grid * grid).all()):
        raise ValueError(f"place_ce: every row needs {skip} + {grid}x{grid} image tokens, got {tokens.tolist()}")
    before_ins = torch.zeros_like(image)
    before_ins[:, :-1] = ids[:, 1:] == ins_id
    rows = before_ins.nonzero()[:, 0]
    if cells is None:
        cells = hidden[image].view(len(ids), -1, hidden.shape[-1])[rows, skip:]
    else:
        cells = cells.expand(len(rows), *cells.shape)
    with torch.autocast(hidden.device.type, enabled=False):  # why: autocast would take the scores back to bf16
        logits = torch.einsum("md,mnd->mn", hidden[before_ins].float(), cells.float()) / hidden.shape[-1] ** 0.5
    targets, keep, seen = [], [], [0] * len(gt_masks)
    for row in rows.tolist():
        i = int(image_index[row])
        if seen[i] == len(gt_masks[i]):
            raise ValueError(f"image {i}: more <ins> slots than its {len(gt_masks[i])} target masks")
        mask = gt_masks[i][seen[i]].float()
        seen[i] += 1
        share = F.adaptive_avg_pool2d(mask[None, None], grid).flatten()
        keep.append(bool(share.sum() > 0))
        targets.append(share / share.sum().clamp_min(1e-12))
    short = [i for i, (n, masks) in enumerate(zip(seen, gt_masks, strict=True)) if n != len(masks)]
    if short:
        raise ValueError(f"images {short}: fewer <ins> slots than target masks")
    if not any(keep):
        return hidden.sum() * 0.0
    kept = torch.tensor(keep, device=logits.device)
    target = torch.stack(targets)[kept]
    return -(target * logits[kept].log_softmax(-1)).sum(-1).mean()


def lasagna_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    ignore: list[torch.Tensor | None] | None = None,
    cfg: LossConfig | None = None,
    decision_ids: tuple[int, ...] = (),
    place: torch.Tensor | None = None,
) -> LossParts:
    """Combine the three parts; mask_logits[i] and gt_masks[i] are (N_i, H_i, W_i) for image i.

    decision_ids: the `<ins>` and `<no_ins>` ids, needed when cfg.decision_weight != 1.
    place: `place_ce`'s value, needed when cfg.place_weight != 0.
    """
    cfg = cfg or LossConfig()
    if len(mask_logits) != len(gt_masks):
        raise ValueError(f"{len(mask_logits)} images of predicted masks but {len(gt_masks)} of targets")
    if cfg.decision_weight != 1.0 and not decision_ids:
        raise ValueError("loss.decision_weight != 1 needs the <ins>/<no_ins> ids (decision_ids)")
    ce = token_ce(logits, labels, decision_ids, cfg.decision_weight)
    bce = ce.new_zeros(())
    dice = ce.new_zeros(())
    num_masks = 0
    for i, (pred, gt) in enumerate(zip(mask_logits, gt_masks, strict=True)):
        if pred.shape != gt.shape:
            raise ValueError(
                f"image {i}: {pred.shape[0]} <ins> predictions of size {tuple(pred.shape[1:])} but targets "
                f"{tuple(gt.shape)}; the k-th <ins> must pair with the k-th target mask"
            )
        if pred.shape[0] == 0:
            continue
        valid = None if ignore is None or ignore[i] is None else ~ignore[i]
        bce = bce + mask_bce_sum(pred, gt, valid)
        dice = dice + mask_dice_sum(pred, gt, valid)
        num_masks += pred.shape[0]
    bce = bce / (num_masks + 1e-8)
    dice = dice / (num_masks + 1e-8)
    total = cfg.ce_weight * ce + cfg.bce_weight * bce + cfg.dice_weight * dice
    if cfg.place_weight:
        if place is None:
            raise ValueError("loss.place_weight != 0 needs place_ce's value (place)")
        total = total + cfg.place_weight * place
    return LossParts(total=total, ce=ce, bce=bce, dice=dice, num_masks=num_masks, place=place)
