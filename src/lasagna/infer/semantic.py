"""Per-class mask logits -> one semantic label map."""

from __future__ import annotations

import torch

UNLABELLED = -1


def merge_semantic(logits: torch.Tensor, class_ids: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """(K, H, W) logits of the present classes -> (H, W) int64 map.

    Each pixel takes the class of its highest logit; a pixel whose highest logit is below `threshold` (0 = sigmoid
    0.5) stays UNLABELLED, which metrics count as wrong for whatever class the pixel really is.
    """
    if logits.shape[0] == 0:
        return torch.full(logits.shape[1:], UNLABELLED, dtype=torch.long)
    best, index = logits.max(0)
    labels = class_ids.to(index.device)[index]
    return torch.where(best >= threshold, labels, torch.full_like(labels, UNLABELLED))
