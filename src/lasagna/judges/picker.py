"""The instance picker: which of the separate pieces of a slot's mask does the phrase mean?

Not the paper's. Asked for "the leftmost star", the model draws the leftmost star and the other stars alike
(docs/history.md): one prompt token tells SAM's decoder what to look for, not which of several look-
alikes. The mask's connected pieces are the candidates, and this module scores each from the phrase's words and the
pieces themselves: each piece's pooled SAM features, its place and size and, given outright, its rank among the pieces
from left to right, from top to bottom and by size, the comparisons an extreme ("the leftmost", "the biggest") asks for;
and those ranks and its offsets read along directions each word gives ("topmost": up), a product that a transformer
given the two apart did not find. A small transformer reads the words' tokens beside the pieces' tokens, so a piece is
judged against the others. Pieces it scores below zero are cut from the mask, unless it scores every piece so, when the
best is kept: whether the phrase has a target at all is the query verifier's call, not this module's.

Its inputs are detached, as the verifiers' are; it is trained alone on the frozen model's answers (`train/answers.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .query import PLACE_CODE, cell_places, place_code

MAX_PIECES = 8
"""Pieces judged per mask, the largest; smaller ones beyond these are left as they are."""

MIN_SHARE = 0.1
"""A piece smaller than this share of its mask's largest is left as it is: a speck at an edge is no candidate."""

CUT = -20.0
"""Mask logit given to the pixels of a piece that is cut (sigmoid about 2e-9)."""

CANDIDATE = -2.0
"""Mask logit at which a new picker cuts a mask into pieces, below the mask's own 0: a look-alike the decoder drew
weakly, all of it under 0, is a candidate too (of the extremes whose mask missed their target, most had it above -2;
docs/history.md). A weak piece that is kept is raised by as much, so that it shows in the mask. A picker learns its
pieces at its level, so the level is one of its weights (`InstancePicker.candidate`) and travels with them."""

RANKS = 5
"""Width of a piece's rank features (`_ranks`)."""

AXES = 6
"""What a word's directions are read along (`InstancePicker.score`): a piece's three ranks, its offset from the pieces'
mean place, and its log area less their mean."""

DIRECTIONS = 4
"""How many directions each word reads from its embedding."""


class InstancePicker(nn.Module):
    def __init__(
        self,
        cell_dim: int,
        word_dim: int,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        candidate: float = CANDIDATE,
    ):
        super().__init__()
        self.register_buffer("candidate", torch.tensor(float(candidate)))  # in the checkpoint: see `CANDIDATE`
        self.max_words = 32
        self.word = nn.Linear(word_dim, width)
        self.order = nn.Embedding(self.max_words, width)  # how many words before the slot it stands
        self.piece = nn.Sequential(nn.Linear(cell_dim + 2, width), nn.GELU(), nn.Linear(width, width))
        self.place = nn.Sequential(nn.Linear(2 * PLACE_CODE, width), nn.GELU(), nn.Linear(width, width))
        self.rank = nn.Sequential(nn.Linear(RANKS, width), nn.GELU(), nn.Linear(width, width))
        self.kind = nn.Embedding(2, width)  # word or piece
        # why built in: an extreme is a piece's rank read in the word's direction ("topmost": lowest y). Given ranks and
        # words apart, the transformer learnt "large" and "small" but not the places (docs/history.md)
        self.direction = nn.Linear(word_dim, DIRECTIONS * AXES)
        self.compare = nn.Sequential(nn.Linear(DIRECTIONS, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))
        with torch.no_grad():  # why: an untrained picker keeps every piece, as a model without one does
            self.head[1].weight.zero_()
            self.head[1].bias.fill_(1.0)

    def score(self, embeds, low_res, pieces, words, valid) -> torch.Tensor:
        """(N, C, h, w) each slot's image embedding, (N, kh, kw) its mask logits, (N, kh, kw) its pieces
        (`label_pieces`), (N, L, D) its phrase's word embeddings and (N, L) bool which are real -> (N, MAX_PIECES)
        log-odds that each piece is meant, -inf where a mask has fewer pieces."""
        dtype = self.head[1].weight.dtype  # why: a checkpoint loaded in bf16 holds bf16 weights; inputs follow them
        cell_dim, h, w = embeds.shape[1:]
        masks = piece_masks(pieces)
        real = masks.flatten(2).any(-1)  # (N, P)
        soft = torch.sigmoid(low_res.float())[:, None] * masks  # (N, P, kh, kw)
        grid = F.adaptive_avg_pool2d(soft, (h, w))  # (N, P, h, w) as `verifier.mask_weights`
        area = grid.sum((2, 3))
        pooled = torch.einsum("nphw,nchw->npc", grid, embeds.float()) / (area + 1)[..., None]
        places = cell_places(*low_res.shape[-2:], device=low_res.device)[0]  # (kh * kw, 2)
        centroid = soft.flatten(2) @ places / (soft.flatten(2).sum(-1, keepdim=True) + 1e-6)  # (N, P, 2)
        mean = (centroid * real[..., None]).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)[..., None]

        cells = masks.flatten(2).sum(-1).clamp(min=1)
        strength = (low_res.float().clamp(-10, 10)[:, None] * masks).flatten(2).sum(-1) / cells / 10  # mean logit
        features = torch.cat([F.layer_norm(pooled, (cell_dim,)), torch.log1p(area)[..., None], strength[..., None]], -1)
        where = torch.cat([place_code(centroid), place_code(centroid - mean)], -1)
        tokens = self.piece(features.to(dtype)) + self.place(where.to(dtype))
        ranks = _ranks(centroid, area, real)
        tokens = tokens + self.rank(ranks.to(dtype)) + self.kind.weight[1]
        axes = torch.cat([ranks[..., :3], centroid - mean, _centred(torch.log1p(area), real)[..., None]], -1)
        directions = self.direction(words.to(dtype)).float().view(*words.shape[:2], DIRECTIONS, AXES)
        measured = torch.einsum("nlka,npa->npk", directions * valid[..., None, None], axes * real[..., None])
        tokens = tokens + self.compare(measured.to(dtype))
        order = (valid.sum(1, keepdim=True) - 1 - torch.arange(words.shape[1], device=words.device)).clamp(min=0)
        said = self.word(words.to(dtype)) + self.order(order.clamp(max=self.max_words - 1)) + self.kind.weight[0]
        pad = torch.cat([valid, real], 1).logical_not()
        out = self.encoder(torch.cat([said, tokens], 1), src_key_padding_mask=pad)[:, words.shape[1] :]
        return self.head(out)[..., 0].float().masked_fill(~real, float("-inf"))

    def pieces(self, low_res: torch.Tensor) -> torch.Tensor:
        """(N, kh, kw) mask logits -> their pieces at this picker's candidate level (`label_pieces`)."""
        return label_pieces(low_res > self.candidate)

    @torch.no_grad()
    def pick(self, embeds, low_res, words, valid, pieces: torch.Tensor | None = None) -> torch.Tensor:
        """`score`'s inputs, the pieces left out to be cut here (`self.pieces`) -> (N, kh, kw) the mask logits with
        every piece not meant cut (`CUT`); a mask of one piece is left as it is, and of several at least the best
        is kept."""
        pieces = self.pieces(low_res) if pieces is None else pieces
        scores = self.score(embeds, low_res, pieces, words, valid)
        keep = (scores >= 0) | (scores == scores.max(1, keepdim=True).values)
        several = torch.isfinite(scores).sum(1) > 1
        drop = several[:, None] & ~keep  # (N, P)
        raise_ = several[:, None] & keep & (piece_peaks(low_res, pieces) < 0)  # kept, and all of it under 0
        out = low_res.masked_fill(_per_cell(drop, pieces), CUT)
        return torch.where(_per_cell(raise_, pieces), low_res - self.candidate.to(low_res.dtype), out)

    def loss(self, embeds, low_res, pieces, words, valid, targets) -> torch.Tensor:
        """Mean BCE of `score` over the real pieces against whether the (N, kh, kw) `targets` (the share of each cell
        the phrase's targets cover) cover most of each; 0 with a gradient path when there is no piece."""
        scores = self.score(embeds, low_res, pieces, words, valid)
        meant = piece_shares(pieces, targets) >= 0.5
        real = torch.isfinite(scores)
        if not real.any():
            return sum(p.sum() for p in self.parameters()) * 0.0
        return F.binary_cross_entropy_with_logits(scores[real], meant[real].float())


def _per_cell(flags: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
    """(N, MAX_PIECES) bool per piece -> (N, h, w) bool per cell of `pieces` (False off every judged piece)."""
    padded = torch.cat([flags.new_zeros(len(flags), 1), flags], 1)  # label 0: background or not judged
    return padded.gather(1, pieces.flatten(1)).view_as(pieces)


def label_pieces(masks: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool -> (N, h, w) long: each mask's 8-connected pieces numbered 1, 2, ... from the largest, at most
    `MAX_PIECES` and none under `MIN_SHARE` of the largest; 0 for the background and for the pieces left out."""
    n, h, w = masks.shape
    fg = masks.float()
    labels = torch.arange(1, h * w + 1, device=masks.device, dtype=torch.float32).view(1, h, w) * fg
    for _ in range(h * w):  # why this bound: a piece's largest label crosses it in fewer steps than it has cells
        grown = F.max_pool2d(labels[:, None], 3, 1, 1)[:, 0] * fg
        if torch.equal(grown, labels):
            break
        labels = grown
    out = torch.zeros(n, h, w, dtype=torch.long, device=masks.device)
    for i in range(n):
        found, counts = labels[i][masks[i]].unique(return_counts=True)
        for k, j in enumerate(counts.argsort(descending=True, stable=True)[:MAX_PIECES].tolist()):
            if counts[j] >= MIN_SHARE * counts.max():
                out[i][labels[i] == found[j]] = k + 1
    return out


def piece_masks(pieces: torch.Tensor) -> torch.Tensor:
    """(N, h, w) pieces (`label_pieces`) -> (N, MAX_PIECES, h, w) bool: each piece's cells, none past the last."""
    return pieces[:, None] == torch.arange(1, MAX_PIECES + 1, device=pieces.device)[None, :, None, None]


def piece_peaks(low_res: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
    """(N, h, w) mask logits and their pieces -> (N, MAX_PIECES) each piece's highest logit, -inf where none."""
    return low_res[:, None].masked_fill(~piece_masks(pieces), float("-inf")).flatten(2).amax(-1)


def piece_shares(pieces: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, h, w) pieces and (N, h, w) target cover in [0, 1] -> (N, MAX_PIECES) the mean cover over each piece."""
    masks = piece_masks(pieces)
    covered = (masks * targets.float()[:, None]).sum((2, 3))
    return covered / masks.sum((2, 3)).clamp(min=1)


def _ranks(centroid: torch.Tensor, area: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(N, P, 2) places, (N, P) areas, (N, P) bool real -> (N, P, RANKS): each piece's rank among the real ones from
    left to right, from top to bottom and from small to large, each in [-1, 1] (0 for a lone piece); its share of
    the pieces' area; and log of how many there are."""
    values = torch.cat([centroid, area[..., None]], -1)  # (N, P, 3)
    below = (values[:, None, :, :] < values[:, :, None, :]) & real[:, None, :, None]  # (N, P, P', 3): P' lower
    count = real.sum(1, keepdim=True)  # (N, 1)
    ranks = below.sum(2).float() / (count - 1).clamp(min=1)[..., None] * 2 - 1
    ranks = ranks * (count > 1)[..., None]
    share = area / (area * real).sum(1, keepdim=True).clamp(min=1e-6)
    many = torch.log(count.float()).expand_as(area)
    return torch.cat([ranks, share[..., None], many[..., None]], -1) * real[..., None]


def _centred(values: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(N, P) values, (N, P) bool real -> each minus the mean over the real ones."""
    mean = (values * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
    return values - mean
