"""Decoding over a shared prefix: the image and system prompt are run once, every chunk reuses their KV cache.

Row layout after the prefix: each row's suffix is LEFT-padded to a common width, so every row's answer starts at the
same column; pads are masked out and positions are counted per row, so a row sees exactly [prefix][its suffix].

Two decoders, both greedy:
- `decode_free`: token-by-token generation (released checkpoints, whose answer order is free). The hidden state
  that predicts each `<ins>` is the mask embedding, so it is collected during generation: no extra forward pass.
- `decode_template`: for models trained with target order consistency the answer is known up to the `<ins>` /
  `<no_ins>` choice after each name. Verify a guessed answer in one batched pass, take the first decision that
  differs from the model's choice, fix it (and adopt the model's later choices as the new guess), and re-run only
  from there. Each pass fixes the first wrong decision of every row, so the loop ends, and the result equals greedy
  decoding constrained to the format.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache

from ..model.lasagna import ImageEncoding, LasagnaModel
from ..model.mllm import expand_images
from ..tokens import TokenIds


@dataclass
class Prefix:
    """KV cache of the shared prefix and its length in the expanded frame.

    Batch 1: one prefix every row continues. Batch B (one per row, `infer/batch.py`): row b continues its own."""

    cache: DynamicCache
    length: int


@dataclass
class Decision:
    """One `<ins>` / `<no_ins>` in an answer.

    index: position of the decision token in `RowResult.ids`; score: P(<ins>) within {<ins>, <no_ins>};
    hidden: (hidden,) state that predicted the decision token: the mask embedding input, kept for `<no_ins>` too (a
    judge reads every slot's mask).
    """

    index: int
    present: bool
    score: float
    hidden: torch.Tensor | None = None


@dataclass
class RowResult:
    ids: list[int]
    decisions: list[Decision] = field(default_factory=list)
    finished: bool = True


@torch.no_grad()
def encode_prefix(model: LasagnaModel, images: ImageEncoding, image: int, prefix_ids: list[int]) -> Prefix:
    """Run the shared prefix (it holds the image token) once and keep its cache."""
    ids = torch.tensor([prefix_ids], device=images.llm_feats.device)
    expanded = expand_images(
        model.embed_tokens, ids, torch.ones_like(ids), images.llm_feats[image : image + 1], model.pad_id
    )
    cache = DynamicCache(config=model.llm.config)
    model.llm.get_decoder()(inputs_embeds=expanded.embeds, past_key_values=cache, use_cache=True)
    return Prefix(cache=cache, length=expanded.embeds.shape[1])


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


class _Rows:
    """Batched continuation of a prefix: feeds columns, tracks masks, positions and the cache."""

    def __init__(self, model: LasagnaModel, prefix: Prefix, batch: int):
        self.model = model
        self.prefix_len = prefix.length
        self.cache = copy.deepcopy(prefix.cache)
        if prefix.cache.layers[0].keys.shape[0] == 1:
            self.cache.batch_repeat_interleave(batch)
        self.device = prefix.cache.layers[0].keys.device
        self.mask = torch.ones((batch, prefix.length), dtype=torch.long, device=self.device)

    def feed(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append columns (B, S) -> ((B, S, hidden) final-norm states, (B, S, V) logits)."""
        self.mask = torch.cat([self.mask, mask], dim=1)
        seen = self.mask[:, self.prefix_len :].cumsum(1)[:, -ids.shape[1] :]
        positions = self.prefix_len + seen - 1
        out = self.model.llm.get_decoder()(
            inputs_embeds=self.model.embed_tokens(ids),
            attention_mask=self.mask,
            position_ids=positions.clamp_min(0),
            past_key_values=self.cache,
            use_cache=True,
        )
        hidden = out.last_hidden_state
        return hidden, self.model.llm.get_output_embeddings()(hidden)

    def truncate(self, columns: int) -> None:
        """Forget everything after the first `columns` suffix columns."""
        keep = self.prefix_len + columns
        drop = self.mask.shape[1] - keep
        if drop > 0:
            self.cache.crop(-drop)
            self.mask = self.mask[:, :keep]


def _presence_score(logits: torch.Tensor, ids: TokenIds) -> torch.Tensor:
    """P(<ins>) renormalised over the two decision tokens; logits (..., V)."""
    pair = torch.stack([logits[..., ids.ins], logits[..., ids.no_ins]], dim=-1).float()
    return pair.softmax(-1)[..., 0]


@torch.no_grad()
def decode_free(
    model: LasagnaModel,
    prefix: Prefix,
    suffixes: list[list[int]],
    ids: TokenIds,
    max_new_tokens: int = 512,
    banned: tuple[int, ...] = (),
) -> list[RowResult]:
    """Greedy generation after each suffix (its prompt ends in "ASSISTANT:"); stops at eos per row. Tokens in `banned`
    are never chosen."""
    rows = _Rows(model, prefix, len(suffixes))
    col_ids, col_mask = _left_pad(suffixes, ids.pad, rows.device)
    hidden, logits = rows.feed(col_ids, col_mask)
    results = [RowResult(ids=[], finished=False) for _ in suffixes]
    last_hidden, last_logits = hidden[:, -1], logits[:, -1]
    for _ in range(max_new_tokens):
        if banned:
            last_logits = last_logits.clone()
            last_logits[:, list(banned)] = float("-inf")
        next_ids = last_logits.argmax(-1)
        scores = _presence_score(last_logits, ids)
        for r, res in enumerate(results):
            if res.finished:
                continue
            tok = int(next_ids[r])
            if tok == ids.eos:
                res.finished = True
                continue
            if tok in (ids.ins, ids.no_ins):
                res.decisions.append(Decision(len(res.ids), tok == ids.ins, float(scores[r]), last_hidden[r].clone()))
            res.ids.append(tok)
        if all(res.finished for res in results):
            break
        alive = torch.tensor([[0 if res.finished else 1] for res in results], device=rows.device)
        hidden, logits = rows.feed(next_ids[:, None].masked_fill(alive == 0, ids.pad), alive)
        last_hidden, last_logits = hidden[:, -1], logits[:, -1]
    return results


@torch.no_grad()
def decode_template(
    model: LasagnaModel,
    prefix: Prefix,
    suffixes: list[list[int]],
    answer_starts: list[int],
    ids: TokenIds,
    max_passes: int | None = None,
) -> list[RowResult]:
    """Resolve each `<ins>`/`<no_ins>` slot of templated suffixes (prompt + answer + eos) by verification.

    suffixes[r] holds row r's prompt continuation and its full answer with a guess in every decision slot;
    answer_starts[r] is where its answer begins in suffixes[r].
    """
    batch = len(suffixes)
    rows = _Rows(model, prefix, batch)
    guess, col_mask = _left_pad(suffixes, ids.pad, rows.device)
    width = guess.shape[1]
    offsets = [width - len(s) for s in suffixes]
    slots = (guess == ids.ins) | (guess == ids.no_ins)
    for r, start in enumerate(answer_starts):
        slots[r, : offsets[r] + start] = False  # only answer slots are decisions
    hidden = torch.zeros(batch, width, model.cfg.llm.hidden_size, device=rows.device)
    scores = torch.zeros(batch, width, device=rows.device)
    start = 0
    for _ in range(max_passes or width):
        h, logits = rows.feed(guess[:, start:], col_mask[:, start:])
        hidden[:, start:] = h.float()
        # the state at column c predicts the token at c + 1
        pred_scores = _presence_score(logits, ids)
        scores[:, start + 1 :] = pred_scores[:, :-1]
        choice = torch.where(scores >= 0.5, ids.ins, ids.no_ins)
        wrong = slots & (choice != guess)
        wrong[:, : start + 1] = False
        if not bool(wrong.any()):
            break
        first = int(wrong.float().argmax(1)[wrong.any(1)].min())
        later = slots.clone()
        later[:, :first] = False
        guess = torch.where(later, choice, guess)
        rows.truncate(first)
        start = first
    results = []
    for r in range(batch):
        begin = offsets[r] + answer_starts[r]
        answer = guess[r, begin:].tolist()
        if answer and answer[-1] == ids.eos:
            answer = answer[:-1]
        decisions = []
        for c in torch.nonzero(slots[r]).flatten().tolist():
            present = int(guess[r, c]) == ids.ins
            decisions.append(Decision(c - begin, present, float(scores[r, c]), hidden[r, c - 1].clone()))
        results.append(RowResult(ids=answer, decisions=decisions))
    return results
