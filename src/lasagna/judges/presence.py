"""The presence verifier: does the region a slot's mask covers look like what the slot names?

Not the paper's: LaSagnA's LLM alone decides `<ins>` or `<no_ins>`. A model whose CLIP is a stand-in trained from
scratch reads shapes less well than its SAM encoder, so its LLM answers an absent "red circle" present beside a red
square; SAM's features under the mask that slot draws say "red square" (docs/history.md).

Each `<ins>` / `<no_ins>` slot gets a second opinion from two things the LLM's belief is not in: SAM's image embedding
averaged under the slot's own mask (its region), and the mean input embedding of the tokens that name it (the answer's
tokens since the previous decision: "red circle" in "...<no_ins>red circle<ins>"). A bilinear match of the two gives
the verifier's log-odds, trained on detached inputs (so it changes nothing else in the model); a two-weight fusion of
them and the LLM's log-odds decides. The fusion starts as the LLM alone and is fit on held-out scenes
(`train/calibrate.py`): on the training data the LLM's answers are surer than on new images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PresenceVerifier(nn.Module):
    def __init__(self, region_dim: int, name_dim: int, width: int = 128):
        super().__init__()
        # +1: the log of the mask's area, so an empty mask (nothing there to look at) is told from a small one
        self.region = nn.Sequential(nn.Linear(region_dim + 1, width), nn.GELU(), nn.Linear(width, width))
        self.name = nn.Linear(name_dim, width)
        self.bias = nn.Parameter(torch.zeros(()))
        self.fusion = nn.Linear(2, 1)
        with torch.no_grad():  # why: an untrained verifier leaves every decision to the LLM
            self.fusion.weight.copy_(torch.tensor([[1.0, 0.0]]))
            self.fusion.bias.zero_()

    def match(self, regions: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
        """(N, region_dim + 1) `pool_regions` and (N, name_dim) `name_embeddings` -> (N,) log-odds of a match."""
        dtype = self.bias.dtype  # why: a checkpoint loaded in bf16 holds bf16 weights; the inputs follow them
        r, n = self.region(regions.to(dtype)).float(), self.name(names.to(dtype)).float()
        return (r * n).sum(-1) / r.shape[-1] ** 0.5 + self.bias.float()

    def judge(self, embeds: torch.Tensor, low_res: torch.Tensor, names: list[torch.Tensor], embed: nn.Module):
        """(N, C, h, w) each slot's image embedding, (N, kh, kw) its mask logits, each slot's name ids and the
        LLM's input embedding -> (N,) log-odds of a match (the engine's entry; `QueryVerifier.judge` alike)."""
        return self.match(pool_regions(embeds, low_res), name_embeddings(embed, names))

    def log_odds_range(self) -> tuple[float, float]:
        """Bounds of `judge`'s log-odds over every mask and name: none finite (`Judges.reach`).

        why none: the match is a bilinear form of an MLP of the region, unbounded in general. A sound bound for one
        image exists (the region's pooled features lie in the hull of its cells, and interval arithmetic carries
        that through the MLP), but on the embedded model's scenes it is several times wider than the LLM's term can
        offset (its fusion weighs the LLM's log-odds, clamped to +-13.8, by 0.30 and the match by 0.85): it would
        leave every slot in the band, so the engine draws every slot's mask."""
        return -math.inf, math.inf

    def fuse(self, llm: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """(N,) LLM log-odds of `<ins>` and (N,) match log-odds -> (N,) log-odds that the slot is present."""
        return self.fusion(torch.stack([llm, match], -1).to(self.bias.dtype))[:, 0].float()

    def loss(self, regions: torch.Tensor, names: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Mean BCE of the match against (N,) bool `present`; 0 (with a gradient path) when N is 0."""
        if present.numel() == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0
        return F.binary_cross_entropy_with_logits(self.match(regions, names), present.float())


def pool_regions(embeds: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) each slot's image embedding and (N, kh, kw) its low-res mask logits -> (N, C + 1).

    The embedding averaged under sigmoid(mask) at the embedding's grid, shrunk toward 0 as the mask empties (the sum
    is divided by area + 1), then log(area + 1)."""
    weights = mask_weights(low_res, embeds.shape[-2:])
    area = weights.sum((1, 2))
    pooled = torch.einsum("nhw,nchw->nc", weights, embeds.float()) / (area + 1)[:, None]
    return torch.cat([pooled, torch.log1p(area)[:, None]], -1)


def mask_weights(low_res: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, kh, kw) mask logits -> (N, *grid) sigmoid(mask) averaged over each cell of the embedding's grid."""
    return F.adaptive_avg_pool2d(torch.sigmoid(low_res.float())[:, None], tuple(grid))[:, 0]


def name_spans(answer: torch.Tensor, decisions: torch.Tensor) -> list[tuple[int, int]]:
    """(L,) bool answer tokens and (L,) bool decision tokens of one row -> per decision, in order, the [start, end)
    of the answer tokens right before it that are not decisions (the name it answers; may be empty)."""
    spans = []
    for end in decisions.nonzero()[:, 0].tolist():
        start = end
        while start > 0 and answer[start - 1] and not decisions[start - 1]:
            start -= 1
        spans.append((start, end))
    return spans


def name_embeddings(embed: nn.Module, names: list[torch.Tensor]) -> torch.Tensor:
    """Each name's (L_i,) token ids -> (N, D) mean input embedding of each (zeros when empty), detached: the verifier
    must not move the LLM's embeddings."""
    width = embed.weight.shape[1]
    with torch.no_grad():
        out = [embed(n).float().mean(0) if len(n) else embed.weight.new_zeros(width).float() for n in names]
    return torch.stack(out) if out else embed.weight.new_zeros(0, width).float()
