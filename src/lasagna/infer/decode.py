"""Decoding over a shared prefix: the image and system prompt are run once, every chunk reuses their KV cache.

Rows run in batches of at most `ROW_BATCH` (memory stays bounded however long the list), longest first; template
decoding also closes a batch early so that rows of like length share one (`batches`). Within a batch each row's
suffix is LEFT-padded to a common width, so every row's answer ends at the same column; pads are masked out and
positions are counted per row, so a row sees exactly [prefix][its suffix].

Two decoders, both greedy:
- `decode_free`: token-by-token generation (released checkpoints, whose answer order is free). The hidden state
  that predicts each `<ins>` is the mask embedding, so it is collected during generation: no extra forward pass.
  Each row stops at its own end: its eos, its token budget, or a run of tokens without a decision longer than any of
  its items can need; a row that stops leaves the batch.
- `decode_template`: for models trained with target order consistency the answer is known up to the `<ins>` /
  `<no_ins>` choice after each name. Verify a guessed answer in one batched pass; in each row, take the first
  decision that differs from the model's choice, fix it (and adopt the model's later choices as the new guess), and
  re-run that row alone from there: a row whose decisions all hold is finished, and each row restarts from its own
  first disagreement. Each pass fixes the first wrong decision of every unfinished row, so the loop ends, and the
  result equals greedy decoding constrained to the format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import DynamicCache

from ..model.lasagna import ImageEncoding, LasagnaModel
from ..model.mllm import expand_images
from ..tokens import TokenIds

ROW_BATCH = 32
"""Rows (chunks) in one LLM call: each holds its own copy of the prefix's KV cache, so this bounds memory."""

PADDING_SHARE = 0.25
"""Template decoding closes a batch early where the next row (rows go longest first) is shorter than its longest by
more than this share: padding it would cost more than the extra LLM call it saves."""

PROGRESS_ROWS = 2 * ROW_BATCH
"""Lists of more rows than this show a progress bar over rows (where stderr is a terminal)."""


@dataclass
class Prefix:
    """KV cache of the shared prefix and its length in the expanded frame.

    `owner` None: the cache has one row, which every decoded row continues. Else decoded row r continues the cache's
    row owner[r] (one per image, `infer/batch.py`)."""

    cache: DynamicCache
    length: int
    owner: list[int] | None = None

    def rows(self, index: Sequence[int]) -> DynamicCache:
        """A new cache holding the prefix each of the decoded rows `index` continues."""
        pick = [0] * len(index) if self.owner is None else [self.owner[i] for i in index]
        out = DynamicCache()
        for layer_index, layer in enumerate(self.cache.layers):
            at = torch.tensor(pick, device=layer.keys.device)
            out.update(layer.keys[at], layer.values[at], layer_index)
        return out


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


def batches(lengths: Sequence[int], max_rows: int = ROW_BATCH, padding_share: float | None = None) -> list[list[int]]:
    """Row indices in batches of at most `max_rows`, longest rows first; a batch closes early at a row shorter than
    its first by more than `padding_share` (default `PADDING_SHARE`; left padding is computed like real tokens)."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    share = PADDING_SHARE if padding_share is None else padding_share
    out: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if not out or len(out[-1]) == max_rows or lengths[i] < (1 - share) * lengths[out[-1][0]]:
            out.append([])
        out[-1].append(i)
    return out


def _batched(suffixes: Sequence[list[int]], max_rows: int | None, padding_share: float | None) -> Iterator[list[int]]:
    """`batches` of the rows (of `ROW_BATCH` rows by default), with a progress bar over rows where the list is long."""
    groups = batches([len(s) for s in suffixes], max_rows or ROW_BATCH, padding_share)
    # why disable=None: tqdm then shows the bar only where stderr is a terminal, never in logs or pipes
    show = None if len(suffixes) > PROGRESS_ROWS else True
    with tqdm(total=len(suffixes), desc="chunks", unit="chunk", disable=show, leave=False) as bar:
        for group in groups:
            yield group
            bar.update(len(group))


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


class _Rows:
    """Batched continuation of a prefix: feeds columns, tracks masks, positions and the cache."""

    def __init__(self, model: LasagnaModel, prefix: Prefix, index: Sequence[int]):
        self.model = model
        self.prefix_len = prefix.length
        self.cache = prefix.rows(index)
        self.device = self.cache.layers[0].keys.device
        self.mask = torch.ones((len(index), prefix.length), dtype=torch.long, device=self.device)

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    def feed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Append columns (B, S) -> (B, S, hidden) final-norm states."""
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
        return out.last_hidden_state

    def keep(self, rows: list[int], columns: list[list[int]]) -> None:
        """Keep only batch rows `rows`: the prefix and, of row i, the cache columns `columns[i]` (past the prefix, in
        order), left-padded to a common width: the tokens a row keeps when it re-runs from its first disagreement."""
        width = max(len(c) for c in columns)
        index = torch.arange(self.prefix_len).repeat(len(rows), 1)
        tail = torch.zeros((len(rows), width), dtype=torch.long)  # pads point at column 0, masked out
        mask = torch.ones((len(rows), self.prefix_len + width), dtype=torch.long)
        for i, cols in enumerate(columns):
            mask[i, self.prefix_len : self.prefix_len + width - len(cols)] = 0
            if cols:
                tail[i, width - len(cols) :] = torch.tensor(cols)
        index = torch.cat([index, tail], 1).to(self.device)
        at = torch.tensor(rows, device=self.device)[:, None]
        cache = DynamicCache()
        for layer_index, layer in enumerate(self.cache.layers):
            # (B', T', heads, d) by advanced indexing, back to (B', heads, T', d): 4x faster than `gather` on CPU
            keys, values = layer.keys[at, :, index], layer.values[at, :, index]
            cache.update(keys.transpose(1, 2).contiguous(), values.transpose(1, 2).contiguous(), layer_index)
        self.cache, self.mask = cache, mask.to(self.device)


def _logits(model: LasagnaModel, hidden: torch.Tensor, tokens: Sequence[int] | None = None) -> torch.Tensor:
    """(..., hidden) states -> (..., V) logits, or only those of `tokens` (..., len(tokens)): the head's other rows
    are never computed."""
    head = model.llm.get_output_embeddings()
    if tokens is None:
        return head(hidden)
    at = torch.tensor(list(tokens), device=hidden.device)
    bias = None if head.bias is None else head.bias[at]
    return torch.nn.functional.linear(hidden, head.weight[at], bias)


def _presence_score(pair: torch.Tensor) -> torch.Tensor:
    """(..., 2) logits of (<ins>, <no_ins>) -> P(<ins>) renormalised over the two."""
    return pair.float().softmax(-1)[..., 0]


@torch.no_grad()
def decode_free(
    model: LasagnaModel,
    prefix: Prefix,
    suffixes: list[list[int]],
    ids: TokenIds,
    max_new_tokens: int | Sequence[int] = 512,
    banned: tuple[int, ...] = (),
    max_rows: int | None = None,
    max_run: int | Sequence[int] | None = None,
) -> list[RowResult]:
    """Greedy generation after each suffix (its prompt ends in "ASSISTANT:"); row r stops at its eos, after
    `max_new_tokens` tokens, or once it has written `max_run` tokens in a row without a decision (each one for all,
    or one per row; None: no such limit), and is `finished` only if it met its eos. Tokens in `banned` are never
    chosen. Rows run `max_rows` (default `ROW_BATCH`) at a time (`batches`)."""
    budgets, runs = _per_row(max_new_tokens, suffixes, "token budgets"), _per_row(max_run, suffixes, "run limits")
    results: list[RowResult] = [RowResult(ids=[], finished=False) for _ in suffixes]
    # why never closed for length: generation steps, not the prompt's padding, are its cost, and a second batch of
    # a list's rows would run its own steps after the first's
    for group in _batched(suffixes, max_rows, padding_share=1.0):
        limits = [(budgets[i], runs[i]) for i in group]
        _free_batch(model, _Rows(model, prefix, group), [suffixes[i] for i in group], ids, banned, limits,
                    [results[i] for i in group])  # fmt: skip
    return results


def _per_row(value: int | Sequence[int] | None, rows: list, what: str) -> list[int | None]:
    if value is None or isinstance(value, int):
        return [value] * len(rows)
    if len(value) != len(rows):
        raise ValueError(f"got {len(value)} {what} for {len(rows)} rows")
    return list(value)


def _free_batch(model, rows: _Rows, suffixes, ids: TokenIds, banned, limits: list, results: list[RowResult]):
    """`decode_free` of one batch, into `results`; a row leaves the batch when it is done (eos, budget or run),
    so that it costs nothing in later steps."""
    col_ids, col_mask = _left_pad(suffixes, ids.pad, rows.device)
    last = rows.feed(col_ids, col_mask)[:, -1]
    alive = [r for r, (budget, run) in enumerate(limits) if budget > 0 and (run is None or run > 0)]
    if not alive:
        return
    if len(alive) < len(limits):  # rows with no budget leave before their first step
        _drop_rows(rows, alive)
        last = last[alive]
    since = [0] * len(limits)  # tokens since each row's last decision (or its start)
    while alive:
        logits = _logits(model, last)
        if banned:
            logits[:, list(banned)] = float("-inf")
        next_ids = logits.argmax(-1).tolist()
        scores = _presence_score(logits[:, [ids.ins, ids.no_ins]]).tolist()
        going = []
        for k, r in enumerate(alive):
            res, tok = results[r], next_ids[k]
            if tok == ids.eos:
                res.finished = True
                continue
            since[r] += 1
            if tok in (ids.ins, ids.no_ins):
                res.decisions.append(Decision(len(res.ids), tok == ids.ins, scores[k], last[k].clone()))
                since[r] = 0
            res.ids.append(tok)
            budget, run = limits[r]
            if len(res.ids) < budget and (run is None or since[r] < run):
                going.append(k)
        if not going:
            break
        if len(going) < len(alive):
            _drop_rows(rows, going)
        step = torch.tensor([[next_ids[k]] for k in going], device=rows.device)
        last = rows.feed(step, torch.ones_like(step))[:, -1]
        alive = [alive[k] for k in going]


def _drop_rows(rows: _Rows, keep: list[int]) -> None:
    """Keep batch rows `keep` of a free-decoding batch, with everything they have seen."""
    at = torch.tensor(keep, device=rows.device)
    for layer in rows.cache.layers:
        layer.keys, layer.values = layer.keys[at], layer.values[at]
    rows.mask = rows.mask[at]


@torch.no_grad()
def decode_template(
    model: LasagnaModel,
    prefix: Prefix,
    suffixes: list[list[int]],
    answer_starts: list[int],
    ids: TokenIds,
    max_passes: int | None = None,
    max_rows: int | None = None,
) -> list[RowResult]:
    """Resolve each `<ins>`/`<no_ins>` slot of templated suffixes (prompt + answer + eos) by verification.

    suffixes[r] holds row r's prompt continuation and its full answer with a guess in every decision slot;
    answer_starts[r] is where its answer begins in suffixes[r]. Rows run `max_rows` (default `ROW_BATCH`) at a time
    (`batches`), with at most `max_passes` passes per batch (default: until every decision holds).
    """
    results: list[RowResult | None] = [None] * len(suffixes)
    for group in _batched(suffixes, max_rows, None):
        done = _template_batch(
            model, _Rows(model, prefix, group), [suffixes[i] for i in group], [answer_starts[i] for i in group], ids,
            max_passes,
        )  # fmt: skip
        for i, result in zip(group, done, strict=True):
            results[i] = result
    return results  # type: ignore[return-value]


def _template_batch(model, rows: _Rows, suffixes, starts: list[int], ids: TokenIds, max_passes) -> list[RowResult]:
    """`decode_template` of one batch. Per row: `kept` tokens have their KV in the cache (at cache columns `where`),
    the tokens up to its last decision are fed (the decision token itself and what follows predict none); only rows
    with a wrong decision that has decisions after it go on, each from its first wrong one."""
    guess = [list(s) for s in suffixes]
    decision = (ids.ins, ids.no_ins)
    slots = [[c for c in range(start, len(s)) if s[c] in decision] for s, start in zip(suffixes, starts, strict=True)]
    ends = [sl[-1] for sl in slots]  # a row is fed up to, not including, its last decision
    scores: list[dict[int, float]] = [{} for _ in suffixes]
    hiddens: list[dict[int, torch.Tensor]] = [{} for _ in suffixes]
    kept, where = [0] * len(suffixes), [[] for _ in suffixes]
    active = list(range(len(suffixes)))
    for _ in range(max_passes or max(len(s) for s in suffixes)):
        block = [guess[r][kept[r] : ends[r]] for r in active]
        base = rows.width
        col_ids, col_mask = _left_pad(block, ids.pad, rows.device)
        hidden = rows.feed(col_ids, col_mask)
        width = col_ids.shape[1]
        # the state at a row's token c predicts its token c + 1: score every slot whose predicting state is new
        asked = [(k, s, width - ends[r] + s - 1) for k, r in enumerate(active) for s in slots[r] if s > kept[r]]
        states = hidden[[k for k, _, _ in asked], [col for _, _, col in asked]]
        probs = _presence_score(_logits(model, states, decision)).tolist()
        states = states.float()
        going, columns = [], []
        for k, r in enumerate(active):
            wrong = None
            for i in [i for i, (kk, _, _) in enumerate(asked) if kk == k]:
                s = asked[i][1]
                scores[r][s], hiddens[r][s] = probs[i], states[i]
                choice = ids.ins if probs[i] >= 0.5 else ids.no_ins
                if wrong is None and choice != guess[r][s]:
                    wrong = s
                if wrong is not None:
                    guess[r][s] = choice  # why: the model's later choices are the best guess for the next pass
            if wrong is None or wrong == ends[r]:  # all hold, or only the last was wrong: nothing left to verify
                continue
            offset = base + width - len(block[k])  # cache column of the row's first fed token
            where[r] = where[r] + [offset + c - kept[r] for c in range(kept[r], wrong)]
            kept[r] = wrong
            going.append(k)
            columns.append(where[r])
        if not going:
            break
        rows.keep(going, columns)
        active = [active[k] for k in going]
        for r in active:  # the kept tokens now end each row's cache, after its left padding
            where[r] = list(range(rows.width - kept[r], rows.width))
    rows_out = zip(guess, starts, slots, scores, hiddens, strict=True)
    return [_template_result(g, start, sl, sc, h, ids) for g, start, sl, sc, h in rows_out]


def _template_result(guess, start, slots, scores, hiddens, ids: TokenIds) -> RowResult:
    answer = guess[start:]
    if answer and answer[-1] == ids.eos:
        answer = answer[:-1]
    decisions = [Decision(s - start, guess[s] == ids.ins, scores[s], hiddens[s].clone()) for s in slots]
    return RowResult(ids=answer, decisions=decisions)
