"""The query verifier: does a query's phrase hold of the region its slot's mask covers, given where the rest is?

Not the paper's. The presence verifier (`verifier.py`) matches a region against a bag of words, so it can say a
region is a star but not that it lies left of the blue square. A from-scratch LLM answers such a relation `<ins>`
whether it holds or not (docs/history.md): it reads where things are too poorly to compare two
places. This module is given places outright. Each word of the phrase looks for itself among SAM's image cells
(attention of its embedding over the cells' features); what it found, where that is, and how far that lies from
the centroid of the slot's mask become the word's token. A small transformer reads the words' tokens beside a token
for the region itself (its pooled features, centroid and area) and gives log-odds that the phrase holds there: in
"the star left of the blue square", the word "blue square" finds its object, and the region must lie left of it. That
comparison is built in: each word reads directions from its embedding and picks another word, and the region's offset
from the picked word's place, measured along those directions, joins its token.

Its inputs are detached, as the presence verifier's: training it moves nothing else. Its fusion with the LLM's
log-odds starts as the LLM alone and is fit on held-out queries (`train/calibrate.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .presence import mask_weights, pool_regions


class QueryVerifier(nn.Module):
    def __init__(
        self, cell_dim: int, word_dim: int, width: int = 128, layers: int = 2, heads: int = 4, max_words: int = 32
    ):
        super().__init__()
        self.max_words = max_words
        self.look = nn.Linear(word_dim, width)  # a word's query over the cells
        self.cell_key = nn.Linear(cell_dim + 2, width)  # a cell's features and place
        self.word = nn.Linear(word_dim, width)
        self.order = nn.Embedding(max_words, width)  # how many words before the slot it stands
        # what the word found (its cells' mean features, normalised) and, apart, where: places enter through their
        # own path, coded at several frequencies; beside features 50 times their size they were never learned
        self.found = nn.Sequential(nn.Linear(cell_dim, width), nn.GELU(), nn.Linear(width, width))
        self.found_place = nn.Sequential(nn.Linear(2 * PLACE_CODE + 1, width), nn.GELU(), nn.Linear(width, width))
        # why built in: a relation is the region's offset from its anchor's place, read along the relation word's
        # direction. Given offsets and words apart, the transformer had not found that product after 30 passes over
        # the answers to 6000 scenes (relations judged at AUC 0.80); given it, it did (AUC 0.98; docs/history.md)
        self.direction = nn.Linear(word_dim, 2 * DIRECTIONS)  # each word's directions ("left" could say (-1, 0))
        self.pick_query = nn.Linear(word_dim, width)  # which word's offset a word measures along them: its anchor
        self.pick_key = nn.Linear(word_dim, width)
        self.compare = nn.Sequential(nn.Linear(DIRECTIONS, width), nn.GELU(), nn.Linear(width, width))
        # the region: pooled features and log area (`pool_regions`), and apart its centroid
        self.region = nn.Sequential(nn.Linear(cell_dim + 1, width), nn.GELU(), nn.Linear(width, width))
        self.region_place = nn.Sequential(nn.Linear(PLACE_CODE, width), nn.GELU(), nn.Linear(width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))
        self.fusion = nn.Linear(2, 1)
        with torch.no_grad():  # why: an untrained verifier leaves every decision to the LLM
            self.fusion.weight.copy_(torch.tensor([[1.0, 0.0]]))
            self.fusion.bias.zero_()

    def judge(self, embeds: torch.Tensor, low_res: torch.Tensor, names: list[torch.Tensor], embed: nn.Module):
        """(N, C, h, w) each slot's image embedding, (N, kh, kw) its mask logits, each slot's phrase ids and the
        LLM's input embedding -> (N,) log-odds that the phrase holds there (`PresenceVerifier.judge` alike)."""
        return self.judge_words(embeds, low_res, *word_embeddings(embed, names, self.max_words))

    def judge_words(self, embeds: torch.Tensor, low_res: torch.Tensor, words: torch.Tensor, valid: torch.Tensor):
        """(N, C, h, w) each slot's image embedding, (N, kh, kw) its mask logits, (N, L, D) its phrase's word
        embeddings (`word_embeddings`) and (N, L) bool which are real -> (N,) log-odds that the phrase holds there."""
        return self._judge(embeds, low_res, words, valid)[0]

    def _judge(self, embeds, low_res, words, valid):
        """`judge_words`, and (N, L, hw) each word's scores over the cells, (N, hw) the mask's weight on each."""
        dtype = self.fusion.weight.dtype  # why: a checkpoint loaded in bf16 holds bf16 weights; inputs follow them
        n, _, h, w = embeds.shape
        cells = embeds.float().flatten(2).transpose(1, 2)  # (N, hw, C)
        places = cell_places(h, w, embeds.device).expand(n, -1, -1)  # (N, hw, 2)
        region = pool_regions(embeds, low_res)
        weights = mask_weights(low_res, (h, w)).flatten(1)
        centroid = (weights[..., None] * places).sum(1) / (weights.sum(1, keepdim=True) + 1e-6)  # (N, 2)

        keys = self.cell_key(torch.cat([cells, places], -1).to(dtype)).float()
        looks = self.look(words.to(dtype)).float()
        scores = looks @ keys.transpose(1, 2) / keys.shape[-1] ** 0.5  # (N, L, hw)
        attention = scores.softmax(-1)
        where = attention @ places  # (N, L, 2)
        strength = (scores.logsumexp(-1) - scores.mean(-1))[..., None]
        seen = F.layer_norm(attention @ cells, cells.shape[-1:])
        offsets = centroid[:, None] - where  # (N, L, 2) the region seen from each word's place
        geometry = torch.cat([place_code(where), place_code(-offsets), strength], -1)
        # why counted back from the slot: the word the phrase ends on (an anchor, "the blue square") then always has
        # the same order, wherever the phrase began; counted from the start, a relation was never learned
        order = (valid.sum(1, keepdim=True) - 1 - torch.arange(words.shape[1], device=words.device)).clamp(min=0)
        tokens = self.word(words.to(dtype)) + self.order(order)
        tokens = tokens + self.found(seen.to(dtype)) + self.found_place(geometry.to(dtype))
        tokens = tokens + self.compare(self._measured(words.to(dtype), valid, order, offsets).to(dtype))
        first = (self.region(region.to(dtype)) + self.region_place(place_code(centroid).to(dtype)))[:, None]
        pad = torch.cat([valid.new_ones(n, 1), valid], 1).logical_not()
        out = self.encoder(torch.cat([first, tokens], 1), src_key_padding_mask=pad)
        return self.head(out[:, 0])[:, 0].float(), scores, weights

    def _measured(self, words, valid, order, offsets):
        """(N, L, DIRECTIONS): for each word, the offset of the word it picks (its anchor) along its own directions."""
        n, length = valid.shape
        directions = self.direction(words).float().view(n, length, DIRECTIONS, 2)
        along = torch.einsum("njkd,nid->njik", directions, offsets)  # word j's directions on word i's offset
        keys = self.pick_key(words) + self.order(order)
        logits = (self.pick_query(words) @ keys.transpose(1, 2)).float() / keys.shape[-1] ** 0.5  # (N, j, i)
        # why finite: a phrase with no words at all must give zeros, not the NaN of a softmax over nothing
        logits = logits.masked_fill(~valid[:, None, :], -1e4)
        return (logits.softmax(-1)[..., None] * along).sum(2)

    def log_odds_range(self) -> tuple[float, float]:
        """Bounds of `judge`'s log-odds over every input (`Judges.reach`): its head reads a LayerNorm's output.

        A LayerNorm's normalised vector x has zero mean and norm <= sqrt(width); the head gives u . x + k with
        u = w * gamma and k = w . beta + bias, so its output lies within sqrt(width) * |u - mean(u)| of k (reached
        by x along u - mean(u)). 2% on the radius covers the rounding of a bfloat16 model."""
        norm, linear = self.head[0], self.head[1]
        w = linear.weight.detach().double()[0]
        u = w * norm.weight.detach().double()
        centre = float(w @ norm.bias.detach().double() + linear.bias.detach().double()[0])
        radius = 1.02 * len(u) ** 0.5 * float((u - u.mean()).norm()) + 1e-6
        return centre - radius, centre + radius

    def fuse(self, llm: torch.Tensor, judged: torch.Tensor) -> torch.Tensor:
        """(N,) LLM log-odds of `<ins>` and (N,) `judge` log-odds -> (N,) log-odds that the slot has a target."""
        return self.fusion(torch.stack([llm, judged], -1).to(self.fusion.weight.dtype))[:, 0].float()

    def loss(self, embeds, low_res, words, valid, present: torch.Tensor) -> torch.Tensor:
        """Mean BCE of `judge` against (N,) bool `present`, plus the look loss; 0 (with a gradient path) when N is 0.

        The look loss teaches a word where it is before any relation can use that: on present slots whose phrase is
        one token (a class of a list, under a whole-names tokenizer), the cross-entropy between that word's scores
        over the cells and the slot's own mask there. Learnt through the relations alone, the looks stay uniform
        and the verifier learns only how often relations hold (docs/history.md)."""
        if present.numel() == 0:
            return sum(p.sum() for p in self.parameters()) * 0.0
        judged, scores, weights = self._judge(embeds, low_res, words, valid)
        loss = F.binary_cross_entropy_with_logits(judged, present.float())
        single = present & (valid.sum(1) == 1) & (weights.sum(1) > 0.5)
        if single.any():
            target = weights[single] / weights[single].sum(1, keepdim=True)
            loss = loss - (target * scores[single, 0].log_softmax(-1)).sum(-1).mean()
        return loss


DIRECTIONS = 4
"""How many directions each word reads from its embedding to measure its anchor's offset along."""

PLACE_CODE = 18
"""Width of `place_code`: a 2-D place or offset, then its sine and cosine at four frequencies."""


def place_code(xy: torch.Tensor) -> torch.Tensor:
    """(..., 2) places in [-1, 1] or offsets in [-2, 2] -> (..., PLACE_CODE): the values, then sin and cos of each at
    pi/2 times 1, 2, 4 and 8 (the first is monotonic over an offset's range, the last tells cells apart)."""
    scaled = xy[..., None] * (torch.tensor([1.0, 2.0, 4.0, 8.0], device=xy.device) * torch.pi / 2)
    return torch.cat([xy, scaled.sin().flatten(-2), scaled.cos().flatten(-2)], -1)


def cell_places(h: int, w: int, device=None) -> torch.Tensor:
    """(1, h * w, 2) each cell's centre as (x, y) in [-1, 1], row-major as a flattened (h, w) map."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], -1).reshape(1, h * w, 2)


def word_embeddings(embed: nn.Module, names: list[torch.Tensor], max_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each phrase's (L_i,) token ids -> ((N, L, D) input embeddings padded with zeros, (N, L) bool real), detached
    (the verifier must not move the LLM's embeddings). A phrase longer than `max_words` keeps its last words: they
    are the ones right before the slot."""
    width = embed.weight.shape[1]
    names = [n[-max_words:] for n in names]
    length = max((len(n) for n in names), default=0)
    words = embed.weight.new_zeros(len(names), length, width).float()
    valid = torch.zeros(len(names), length, dtype=torch.bool, device=embed.weight.device)
    with torch.no_grad():
        for i, n in enumerate(names):
            if len(n):
                words[i, : len(n)] = embed(n).float()
                valid[i, : len(n)] = True
    return words, valid
