"""Projections between the boxes: image features -> LLM space, LLM hidden -> SAM prompt space."""

from __future__ import annotations

from torch import nn


def image_projector(kind: str, in_dim: int, out_dim: int) -> nn.Module:
    """LLaVA's mm_projector: `linear` (LLaVA-Lightning, the released weights) or `mlp2x_gelu` (LLaVA-1.5)."""
    builders = {
        "linear": lambda: nn.Linear(in_dim, out_dim),
        "mlp2x_gelu": lambda: nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)),
    }
    if kind not in builders:
        raise KeyError(f"unknown projector {kind!r}; known: {sorted(builders)}")
    return builders[kind]()


def text_projector(hidden: int, prompt_dim: int) -> nn.Sequential:
    """hidden -> hidden -> ReLU -> prompt_dim: turns the hidden state before an `<ins>` into a SAM prompt."""
    return nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, prompt_dim))
