"""Per-class mask logits -> one semantic label map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

UNLABELLED = -1


def merge_semantic(
    logits: torch.Tensor, class_ids: torch.Tensor, threshold: float = 0.0, scores: torch.Tensor | None = None
) -> torch.Tensor:
    """(K, H, W) logits of the present classes -> (H, W) int64 map.

    Each pixel takes the class most likely to cover it. Without `scores` that is the class of its highest logit; with
    `scores` (K,), each class's probability of being present, it is the class of the highest P(present) * P(pixel in
    its mask). why: a class wrongly answered present (score near 0.5) then gives way to a surely present class (score
    near 1) where their masks overlap, instead of taking its pixels on a mask logit that knows nothing of presence.
    A pixel whose winning class has a logit at or below `threshold` (0 = sigmoid 0.5) stays UNLABELLED, which metrics
    count as wrong for whatever class the pixel really is; at 0 that is exactly where the engine's masks (logits > 0)
    end, so a pixel is never labelled outside its class's mask.
    """
    if logits.shape[0] == 0:
        return torch.full(logits.shape[1:], UNLABELLED, dtype=torch.long)
    if scores is None:
        best, index = logits.max(0)
    else:
        if scores.shape != logits.shape[:1]:
            raise ValueError(f"scores {tuple(scores.shape)} must hold one score per mask of {tuple(logits.shape)}")
        joint = F.logsigmoid(logits.float()) + scores.float().clamp_min(1e-12).log()[:, None, None]
        index = joint.argmax(0)
        best = logits.gather(0, index[None])[0]
    labels = class_ids.to(index.device)[index]
    return torch.where(best > threshold, labels, torch.full_like(labels, UNLABELLED))
