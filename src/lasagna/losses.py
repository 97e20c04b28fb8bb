"""Training losses, computed outside `forward`: 1.0 * CE + 2.0 * BCE + 0.5 * Dice (the released recipe).

Normalisation follows the released code: CE is the mean over supervised tokens; BCE is a per-mask mean over pixels,
Dice a per-mask soft Dice (sums scaled by 1/1000, eps 1e-6); both summed over masks and divided by the number of
masks in the batch. A batch with no masks has mask losses of exactly 0. Pixels marked ignore are left out of both.

One addition, off by default: `decision_weight` counts each `<ins>`/`<no_ins>` label that many times in the CE mean
(a weighted mean, so 1.0 is exactly the released CE). A model trained from scratch uses it to make the presence
decisions, a third of its answer tokens, outweigh the mask losses that otherwise steer its LLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .tokens import IGNORE_INDEX

DICE_SCALE = 1000.0
DICE_EPS = 1e-6


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    decision_weight: float = 1.0  # CE weight of <ins>/<no_ins> labels; 1.0 = the released plain mean


@dataclass
class LossParts:
    total: torch.Tensor
    ce: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    num_masks: int


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


def lasagna_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: list[torch.Tensor],
    gt_masks: list[torch.Tensor],
    ignore: list[torch.Tensor | None] | None = None,
    cfg: LossConfig | None = None,
    decision_ids: tuple[int, ...] = (),
) -> LossParts:
    """Combine the three parts; mask_logits[i] and gt_masks[i] are (N_i, H_i, W_i) for image i.

    decision_ids: the `<ins>` and `<no_ins>` ids, needed when cfg.decision_weight != 1.
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
    return LossParts(total=total, ce=ce, bce=bce, dice=dice, num_masks=num_masks)
