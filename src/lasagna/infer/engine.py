"""Inference over one image: encode it once, run chunked class lists or a free query, decode masks.

A class list longer than `chunk_size` is split into chunks that run as one batch over the same image: the vision
tower and SAM image encoder run once, the shared prefix (system prompt + image + instruction) once through the KV
cache, and the chunks' suffixes together.

Every method that takes an image takes either an (H, W, 3) uint8 RGB array or its `preprocess.PreparedImage`,
whose encoder pixels were computed elsewhere (in `lasagna segment`'s DataLoader workers) by the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .. import prompts
from ..model.lasagna import ImageEncoding, LasagnaModel
from ..preprocess import PreparedImage, prepare
from ..prompts import query_question, semantic_question
from ..tokenization import encode
from ..tokens import reserved_strings, token_ids
from .decode import RowResult, decode_free, decode_template, encode_prefix
from .inputs import check_chunk_context, check_classes, check_query, check_query_context
from .judging import Judge, Kind, Slots, judge_slots
from .parse import parse_row
from .prediction import ClassResult, Prediction

Decoder = Literal["free", "template"]
ImageInput = np.ndarray | PreparedImage


MASK_BATCH = 128
"""Slots whose masks SAM's decoder draws in one call: each holds its own copy of the image's embedding and its
upscaled maps, so this bounds memory whatever the length of the list."""

FREE_MARGIN = 8
"""Tokens free decoding of a chunk may write past the longest answer in the trained format (each name with its
marker, then the end of sequence), and past its longest item without a marker: room for a model that words a name
its own way, none for one that never stops or repeats a word."""

QUERY_BATCH = 16
"""Queries decoded together (`Engine.answer_queries`): each row holds its own copy of the shared prefix's KV cache."""


@dataclass
class ChunkRows:
    """`Engine.chunk_rows`: per chunk its token row; template: where its answer starts; free: its token budget and
    the most tokens it may write in a row without a decision (`decode_free`'s `max_run`)."""

    rows: list[list[int]]
    starts: list[int] = field(default_factory=list)
    budgets: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)


class Engine:
    """Answers class lists, queries and chat about images with the paper's `model`; an optional `judge` gives a
    second opinion on its decisions (`Judge`)."""

    def __init__(self, model: LasagnaModel, tokenizer, judge: Judge | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.judge = judge
        self.ids = token_ids(tokenizer)
        self.reserved = reserved_strings(tokenizer)
        self.style = model.cfg.tokenization
        self._planned: tuple[tuple, ChunkRows] | None = None  # the last list's rows: a folder asks it of every image

    def _render(self, rounds: list[tuple[str, str | None]]) -> str:
        return prompts.render(rounds, self.tokenizer.eos_token, wrap_image=self.model.cfg.use_im_start_end)

    def _encode(self, text: str) -> list[int]:
        return encode(self.tokenizer, text, self.style)

    def prepare(self, image: ImageInput, what: str = "image") -> PreparedImage:
        """An image's encoder pixels under this model's preprocessing: computed for an array, checked for a
        `PreparedImage` (one made under another config would give other answers without a word)."""
        cfg = self.model.cfg.preprocess
        if not isinstance(image, PreparedImage):
            return prepare(image, cfg, what)
        if image.config != cfg:
            raise ValueError(f"{what} was prepared with {image.config}, but this model preprocesses with {cfg}")
        return image

    @torch.no_grad()
    def encode_image(self, image: ImageInput) -> tuple[ImageEncoding, tuple[int, int], tuple[int, int]]:
        """An image -> (its encoding, SAM's resized (h', w'), the original (H, W))."""
        prepared = self.prepare(image)
        param = next(self.model.parameters())
        to = {"device": param.device, "dtype": param.dtype}
        enc = self.model.encode_images(prepared.clip[None].to(**to), prepared.sam[None].to(**to))
        return enc, prepared.resized, prepared.size

    def slot_low_res(self, enc, hiddens: list[torch.Tensor]) -> torch.Tensor:
        """Mask embeddings (hidden states before decisions) -> (N, h, w) low-res mask logits, in `decode`'s frame."""
        if not hiddens:
            return torch.zeros((0, 0, 0), device=enc.sam_embeds.device)
        proj = self.model.text_projector
        out = []
        for start in range(0, len(hiddens), MASK_BATCH):
            prompts_ = proj(torch.stack(hiddens[start : start + MASK_BATCH]).to(proj[0].weight.dtype))
            out.append(self.model.sam.decode(enc.sam_embeds, prompts_, enc.skips_of(0)))
        return torch.cat(out)

    def _full_size(self, low: torch.Tensor, resized, original) -> torch.Tensor:
        """(N, h, w) low-res logits -> (N, H, W) float32 logits at the image's size."""
        if not len(low):
            return torch.zeros((0, *original), device=low.device)
        return self.model.sam.postprocess(low, resized, original)

    def _decide(self, enc, decisions: list, names: list[list[int]], resized, original, kind: Kind):
        """Decisions and the ids of the name each answers -> (present flags, scores, (K, H, W) mask logits of the
        present ones in order, (N, 2) the LLM's and the judge's log-odds, or None where no judge decides).

        Without a judge the LLM's `<ins>`/`<no_ins>` decides, the score is its P(`<ins>`), and only the present
        slots' masks are drawn. A judge that decides this kind sees the mask of every slot it could still call present
        (`Judge.reach`), and its fused log-odds decide; the score is the fused probability (for a slot it did not need
        to see, the highest it could have been, below 0.5; its evidence then has NaN for the judge). A judge may also
        redraw the present masks (`Judge.refine`). Only the present masks are brought to the image's size, once."""
        device = enc.sam_embeds.device
        judge = self.judge
        judged = judge is not None and judge.judges(kind)
        if judged and not decisions:
            return [], [], torch.zeros((0, *original), device=device), torch.zeros(0, 2)
        ids = [torch.tensor(n, dtype=torch.long, device=device) for n in names]
        evidence = None
        if judged:
            fused, evidence, low = judge_slots(self, enc, judge, kind, decisions, ids, MASK_BATCH)
            flags, scores = (fused >= 0).tolist(), torch.sigmoid(fused).tolist()
        else:
            flags, scores = [d.present for d in decisions], [d.score for d in decisions]
            low = self.slot_low_res(enc, [d.hidden for d in decisions if d.present])
        if judge is not None and len(low):
            kept = [i for i, yes in zip(ids, flags, strict=True) if yes]
            embeds = enc.sam_embeds.expand(len(low), -1, -1, -1)
            low = judge.refine(kind, Slots(embeds, low, kept, None, self.model.embed_tokens))
        return flags, scores, self._full_size(low, resized, original), evidence

    def chunk_rows(self, chunks: list[list[str]], decoder: Decoder) -> ChunkRows:
        """The token rows a class list's chunks are decoded from (free: the prompts; template: prompt and answer),
        where each answer starts (template) and each row's token budget (free); a chunk over the model's positions
        is refused by name. The rows are shared with the caller, who must not change them."""
        key = (tuple(tuple(c) for c in chunks), decoder)
        if self._planned is not None and self._planned[0] == key:
            return self._planned[1]
        out = ChunkRows([])
        for chunk in chunks:
            question = semantic_question(chunk)
            prompt_ids = self._encode(self._render([(question, None)]))
            # why "absent" as the guess: most names of a list are absent from an image, so a row whose names all are
            # is verified in one pass, and one with present names re-runs only from its first present one
            full = self._encode(self._render([(question, prompts.semantic_answer(chunk, [False] * len(chunk)))]))
            check_chunk_context(full, self.model.cfg, chunk)
            if decoder == "free":
                out.rows.append(prompt_ids)
                out.budgets.append(len(full) - len(prompt_ids) + FREE_MARGIN)
                out.runs.append(_longest_item(full[len(prompt_ids) :], self.ids) + FREE_MARGIN)
                continue
            if full[: len(prompt_ids)] != prompt_ids:
                raise RuntimeError("tokenizer merges the prompt into the answer; template decoding needs a boundary")
            out.rows.append(full)
            out.starts.append(len(prompt_ids))
        self._planned = (key, out)
        return out

    def _run_chunks(self, enc, chunks: list[list[str]], decoder: Decoder) -> list[RowResult]:
        planned = self.chunk_rows(chunks, decoder)
        rows, starts = planned.rows, planned.starts
        shared = _common_prefix(rows)
        if starts:  # decisions are never part of the shared prefix
            shared = min(shared, *starts)
        prefix = encode_prefix(self.model, enc, 0, rows[0][:shared])
        suffixes = [r[shared:] for r in rows]
        if decoder == "free":
            budgets, runs = planned.budgets, planned.runs
            return decode_free(self.model, prefix, suffixes, self.ids, max_new_tokens=budgets, max_run=runs)
        return decode_template(self.model, prefix, suffixes, [s - shared for s in starts], self.ids)

    @torch.no_grad()
    def segment_classes(
        self, image: ImageInput, classes: list[str], chunk_size: int = 16, decoder: Decoder | None = None
    ) -> Prediction:
        classes = check_classes(classes, self.reserved)
        decoder = decoder or self.model.cfg.default_decoder
        if decoder not in ("free", "template"):
            raise ValueError(f"decoder must be 'free' or 'template', got {decoder!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        enc, resized, original = self.encode_image(image)
        chunks = split_chunks(classes, chunk_size)
        results = self._run_chunks(enc, chunks, decoder)
        names, decisions, name_tokens, unmatched = [], [], [], []
        for chunk, row in zip(chunks, results, strict=True):
            spans = name_ids(row)
            if decoder == "template":
                items = list(zip(chunk, row.decisions, spans, strict=True))
            else:
                parsed = parse_row(self.tokenizer, row, chunk)
                unmatched += [p.text for p in parsed if p.name is None]
                items = [(p.name, d, n) for p, d, n in zip(parsed, row.decisions, spans, strict=True) if p.name]
            names += [name for name, _, _ in items]
            decisions += [d for _, d, _ in items]
            name_tokens += [n for _, _, n in items]
        present, scores, logits, evidence = self._decide(enc, decisions, name_tokens, resized, original, "classes")
        found: dict[str, ClassResult] = {}
        for name, decision, yes, score in zip(names, decisions, present, scores, strict=True):
            found[name] = ClassResult(name, yes, score, llm_present=decision.present)
        owners = [name for name, yes in zip(names, present, strict=True) if yes]
        warnings = []
        for name, lg in zip(owners, logits, strict=True):
            mask = (lg > 0).cpu().numpy()
            if mask.any():
                found[name].mask = mask
            else:  # why: "present" with nothing to show would contradict itself; the text says so too
                found[name].present = False
                warnings.append(f"{name!r} was answered present but its mask is empty; it is reported absent")
        final = {id(d): found[name].present for name, d in zip(names, decisions, strict=True)}
        out = [found.get(name, ClassResult(name, False, 0.0, answered=False)) for name in classes]
        keep = [owners.index(c.name) for c in out if c.present]
        per_class = None
        if evidence is not None:
            per_class = torch.full((len(classes), 2), float("nan"))
            row = {name: i for i, name in enumerate(names)}
            for k, c in enumerate(out):
                if c.name in row:
                    per_class[k] = evidence[row[c.name]]
        return Prediction(
            image_size=original,
            classes=out,
            text="\n".join(self._answer_text(row, final) for row in results),
            unmatched=unmatched,
            logits=logits[keep].cpu() if keep else None,
            evidence=per_class,
            warnings=warnings,
        )

    def _answer_text(self, row: RowResult, final: dict[int, bool]) -> str:
        """A row's answer as text, each decision written as finally taken (`final`, by `id` of the decision, where
        a judge or an empty mask overruled the LLM), so that the text never contradicts the flags."""
        ids = list(row.ids)
        for d in row.decisions:
            if id(d) in final and final[id(d)] != d.present:
                ids[d.index] = self.ids.ins if final[id(d)] else self.ids.no_ins
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @torch.no_grad()
    def segment_query(self, image: ImageInput, query: str, max_new_tokens: int = 128) -> Prediction:
        """A referring or reasoning query: free decoding, one mask per `<ins>` in the answer (with a judge, per decision
        its fusion calls present; `Prediction.evidence` then holds the two log-odds of each)."""
        return self.segment_queries(image, [query], max_new_tokens)[0]

    @torch.no_grad()
    def segment_queries(self, image: ImageInput, queries: list[str], max_new_tokens: int = 128) -> list[Prediction]:
        """`segment_query` for each of several queries about one image, which is encoded once; their answers are
        decoded together over one shared prefix (`answer_queries`)."""
        for query in queries:
            check_query(query, self.reserved)
        enc, resized, original = self.encode_image(image)
        predictions = []
        for row in self.answer_queries(enc, queries, max_new_tokens):
            decided = self._decide(enc, row.decisions, name_ids(row), resized, original, "query")
            flags, scores, logits, evidence = decided
            present = [d for d, yes in zip(row.decisions, flags, strict=True) if yes]
            masks = [(lg > 0).cpu().numpy() for lg in logits]
            drawn = [k for k, mask in enumerate(masks) if mask.any()]
            final = {id(d): yes for d, yes in zip(row.decisions, flags, strict=True)}
            warnings = []
            for k in sorted(set(range(len(masks))) - set(drawn)):
                final[id(present[k])] = False  # why: an `<ins>` with nothing to show would contradict itself
                warnings.append(f"target {k + 1} of the answer has an empty mask; it is reported absent")
            predictions.append(
                Prediction(
                    image_size=original,
                    text=self._answer_text(row, final),
                    masks=[masks[k] for k in drawn],
                    scores=scores,
                    logits=logits[drawn].cpu(),
                    evidence=evidence,
                    warnings=warnings,
                )
            )
        return predictions

    def answer_query(self, enc, query: str, max_new_tokens: int = 128) -> RowResult:
        """Free-decode the answer to a query about an image already encoded (`encode_image`)."""
        return self.answer_queries(enc, [query], max_new_tokens)[0]

    def answer_queries(self, enc, queries: list[str], max_new_tokens: int = 128) -> list[RowResult]:
        """Free-decode the answers to several queries about an image already encoded, `QUERY_BATCH` at a time as one
        batch: the prompt they share (system prompt, image, the template's start) runs through the LLM once, and
        each answer is the one the query gets alone, up to rounding (`decode.py` counts positions per row)."""
        rows = [self._encode(self._render([(query_question(q), None)])) for q in queries]
        for query in queries:
            self._check_query_fits(query)
        out = []
        for start in range(0, len(rows), QUERY_BATCH):
            batch = rows[start : start + QUERY_BATCH]
            shared = _common_prefix(batch)
            prefix = encode_prefix(self.model, enc, 0, batch[0][:shared])
            suffixes = [r[shared:] for r in batch]
            out += decode_free(self.model, prefix, suffixes, self.ids, max_new_tokens=max_new_tokens)
        return out

    def _check_query_fits(self, query: str) -> None:
        """The prompt must leave room for the shortest answer, "<ins>."."""
        answered = self._encode(self._render([(query_question(query), prompts.refer_answer(1))]))
        check_query_context(answered, self.model.cfg, query)

    def check_fits(
        self, classes: list[str] | None, query: str | None, chunk_size: int = 16, decoder: Decoder | None = None
    ) -> None:
        """Refuse a class list (checked, `check_classes`) whose chunks, or a query whose prompt, would not fit the
        model's positions, before any image: the checks `segment_classes` / `segment_query` make as they run, so
        that a run over many images stops before it writes anything."""
        if query is not None:
            self._check_query_fits(query)
            return
        self.chunk_rows(split_chunks(classes, chunk_size), decoder or self.model.cfg.default_decoder)

    @torch.no_grad()
    def chat(self, image: ImageInput, text: str, max_new_tokens: int = 256) -> str:
        check_query(text, self.reserved, "text")
        enc, _, _ = self.encode_image(image)
        row = self._generate(enc, prompts.chat_question(text), max_new_tokens)
        return self.tokenizer.decode(row.ids, skip_special_tokens=True).strip()

    def _generate(self, enc, question: str, max_new_tokens: int) -> RowResult:
        """A chat answer: the mask tokens are never chosen (a chat has no masks to give)."""
        ids = self._encode(self._render([(question, None)]))
        check_query_context([*ids, self.ids.eos], self.model.cfg, question.removeprefix(prompts.IMAGE_PREFIX), "text")
        prefix = encode_prefix(self.model, enc, 0, ids[:-1])
        banned = (self.ids.ins, self.ids.no_ins)
        return decode_free(self.model, prefix, [ids[-1:]], self.ids, max_new_tokens=max_new_tokens, banned=banned)[0]


def split_chunks(classes: list[str], chunk_size: int) -> list[list[str]]:
    """A class list in chunks of `chunk_size` names, in order (the last may be shorter)."""
    return [classes[i : i + chunk_size] for i in range(0, len(classes), chunk_size)]


def name_ids(row: RowResult) -> list[list[int]]:
    """Per decision of an answer, the ids since the previous decision (or the answer's start): the name it answers,
    as a judge reads it in training (`lasagna.judges.presence.name_spans`)."""
    out, start = [], 0
    for d in row.decisions:
        out.append(row.ids[start : d.index])
        start = d.index + 1
    return out


def _longest_item(answer: list[int], ids) -> int:
    """The most tokens of a templated answer up to and including one of its decisions (a name and its marker)."""
    longest, since = 0, 0
    for tok in answer:
        since += 1
        if tok in (ids.ins, ids.no_ins):
            longest, since = max(longest, since), 0
    return max(longest, since)


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every row at least one token of its own."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n
