"""Inference over one image: encode it once, run chunked class lists or a free query, decode masks.

A class list longer than `chunk_size` is split into chunks that run as one batch over the same image: the vision
tower and SAM image encoder run once, the shared prefix (system prompt + image + instruction) once through the KV
cache, and the chunks' suffixes together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .. import prompts
from ..data.transforms import check_image, clip_pixels, sam_pixels
from ..model.lasagna import ImageEncoding, LasagnaModel
from ..model.query_verifier import word_embeddings
from ..prompts import query_question, semantic_question
from ..tokenization import encode
from ..tokens import reserved_strings, token_ids
from .decode import RowResult, decode_free, decode_template, encode_prefix
from .inputs import check_chunk_context, check_classes, check_query, check_query_context
from .parse import parse_row
from .semantic import merge_semantic

Decoder = Literal["free", "template"]

QUERY_BATCH = 16
"""Queries decoded together (`Engine.answer_queries`): each row holds its own copy of the shared prefix's KV cache."""


@dataclass
class ClassResult:
    """One queried class: `present`, P(<ins>) `score` (with a presence verifier, the fused P, `Engine._decide`),
    `mask` (H, W) bool at the original size when present.

    `answered` is False when free decoding never named the class (it is then reported absent).
    """

    name: str
    present: bool
    score: float
    mask: np.ndarray | None = None
    answered: bool = True


@dataclass
class Prediction:
    image_size: tuple[int, int]
    classes: list[ClassResult] = field(default_factory=list)
    text: str = ""
    masks: list[np.ndarray] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    logits: torch.Tensor | None = field(default=None, repr=False)  # (K_present, H, W), order of present classes
    # query mode: P(<ins>) within {<ins>, <no_ins>} at each decision of the answer, in order, <no_ins> ones too
    # (with a query verifier, the fused P that decides)
    scores: list[float] = field(default_factory=list)
    # class lists with a presence verifier: (len(classes), 2) the LLM's and the verifier's log-odds of each queried
    # class, NaN where free decoding never named it; queries with a query verifier: (decisions, 2) alike, in answer
    # order (what `lasagna calibrate` fits the fusions on)
    evidence: torch.Tensor | None = field(default=None, repr=False)

    @property
    def present(self) -> list[str]:
        return [c.name for c in self.classes if c.present]

    @property
    def absent(self) -> list[str]:
        return [c.name for c in self.classes if not c.present]

    def semantic_map(
        self, classes: list[str] | None = None, threshold: float = 0.0, by_score: bool = True
    ) -> np.ndarray:
        """(H, W) int64: index into `classes` (default: the queried list) per pixel, -1 where unlabelled.

        Where masks overlap, a pixel goes to the class with the highest P(present) * P(pixel in mask); with
        `by_score=False`, to the highest mask logit alone (as the released code merges).
        """
        classes = classes or [c.name for c in self.classes]
        index = {name: i for i, name in enumerate(classes)}
        present = [c for c in self.classes if c.present]
        if self.logits is None or not present:
            return np.full(self.image_size, -1, dtype=np.int64)
        ids = torch.tensor([index[c.name] for c in present])
        scores = torch.tensor([c.score for c in present]) if by_score else None
        return merge_semantic(self.logits, ids, threshold, scores).numpy()


class Engine:
    def __init__(self, model: LasagnaModel, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.ids = token_ids(tokenizer)
        self.reserved = reserved_strings(tokenizer)
        self.style = model.cfg.tokenization

    def _render(self, rounds: list[tuple[str, str | None]]) -> str:
        return prompts.render(rounds, self.tokenizer.eos_token, wrap_image=self.model.cfg.use_im_start_end)

    def _encode(self, text: str) -> list[int]:
        return encode(self.tokenizer, text, self.style)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> tuple[ImageEncoding, tuple[int, int], tuple[int, int]]:
        image = check_image(image)
        pre = self.model.cfg.preprocess
        sam, resized = sam_pixels(image, pre)
        param = next(self.model.parameters())
        to = {"device": param.device, "dtype": param.dtype}
        enc = self.model.encode_images(clip_pixels(image, pre)[None].to(**to), sam[None].to(**to))
        return enc, resized, tuple(image.shape[:2])

    def slot_low_res(self, enc, hiddens: list[torch.Tensor]) -> torch.Tensor:
        """Mask embeddings (hidden states before decisions) -> (N, h, w) low-res mask logits, in `decode`'s frame."""
        if not hiddens:
            return torch.zeros((0, 0, 0), device=enc.sam_embeds.device)
        proj = self.model.text_projector
        prompts_ = proj(torch.stack(hiddens).to(proj[0].weight.dtype))
        return self.model.sam.decode(enc.sam_embeds, prompts_, enc.skips_of(0))

    def _full_size(self, low: torch.Tensor, resized, original) -> torch.Tensor:
        """(N, h, w) low-res logits -> (N, H, W) float32 logits at the image's size."""
        if not len(low):
            return torch.zeros((0, *original), device=low.device)
        return self.model.sam.postprocess(low, resized, original)

    def _decide(self, enc, decisions: list, names: list[list[int]], resized, original, verifier=None, picker=None):
        """Decisions and the ids of the name each answers -> (present flags, scores, (K, H, W) mask logits of the
        present ones in order, (N, 2) the LLM's and the verifier's log-odds or None without a verifier).

        Without a verifier the LLM's `<ins>`/`<no_ins>` decides and the score is its P(`<ins>`). With one (the
        model's presence verifier for class lists, its query verifier for queries), every slot is decoded and the
        verifier's fusion of the LLM's log-odds with its own judgement decides (`model/verifier.py`,
        `model/query_verifier.py`); the score is the fused probability. With an instance picker (queries), each
        present mask keeps only the pieces its name means (`model/picker.py`). Only the present masks are brought
        to the image's size, once."""
        device = enc.sam_embeds.device
        ids = [torch.tensor(n, dtype=torch.long, device=device) for n in names]
        if verifier is None:
            flags, scores, evidence = [d.present for d in decisions], [d.score for d in decisions], None
            low = self.slot_low_res(enc, [d.hidden for d in decisions if d.present])
        elif not decisions:
            return [], [], torch.zeros((0, *original), device=device), torch.zeros(0, 2)
        else:
            low = self.slot_low_res(enc, [d.hidden for d in decisions])
            embeds = enc.sam_embeds.expand(len(decisions), -1, -1, -1)
            judged = verifier.judge(embeds, low, ids, self.model.embed_tokens)
            llm = llm_log_odds(torch.tensor([d.score for d in decisions], device=device))
            evidence = torch.stack([llm, judged], -1).float()
            fused = verifier.fuse(evidence[:, 0], evidence[:, 1])
            flags, scores, evidence = (fused >= 0).tolist(), torch.sigmoid(fused).tolist(), evidence.cpu()
            low = low[fused >= 0]
        if picker is not None and len(low):
            kept = [i for i, yes in zip(ids, flags, strict=True) if yes]
            embeds = enc.sam_embeds.expand(len(low), -1, -1, -1)
            low = picker.pick(embeds, low, *word_embeddings(self.model.embed_tokens, kept, picker.max_words))
        return flags, scores, self._full_size(low, resized, original), evidence

    def _run_chunks(self, enc, chunks: list[list[str]], decoder: Decoder) -> list[RowResult]:
        rows, starts = [], []
        for chunk in chunks:
            question = semantic_question(chunk)
            prompt_ids = self._encode(self._render([(question, None)]))
            full = self._encode(self._render([(question, prompts.semantic_answer(chunk))]))
            check_chunk_context(full, self.model.cfg, chunk)
            if decoder == "free":
                rows.append(prompt_ids)
                continue
            if full[: len(prompt_ids)] != prompt_ids:
                raise RuntimeError("tokenizer merges the prompt into the answer; template decoding needs a boundary")
            rows.append(full)
            starts.append(len(prompt_ids))
        shared = _common_prefix(rows)
        if starts:  # decisions are never part of the shared prefix
            shared = min(shared, *starts)
        prefix = encode_prefix(self.model, enc, 0, rows[0][:shared])
        suffixes = [r[shared:] for r in rows]
        if decoder == "free":
            budget = max(len(s) for s in suffixes) * 2 + 16
            return decode_free(self.model, prefix, suffixes, self.ids, max_new_tokens=budget)
        return decode_template(self.model, prefix, suffixes, [s - shared for s in starts], self.ids)

    @torch.no_grad()
    def segment_classes(
        self, image: np.ndarray, classes: list[str], chunk_size: int = 16, decoder: Decoder | None = None
    ) -> Prediction:
        classes = check_classes(classes, self.reserved)
        decoder = decoder or self.model.cfg.default_decoder
        if decoder not in ("free", "template"):
            raise ValueError(f"decoder must be 'free' or 'template', got {decoder!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        enc, resized, original = self.encode_image(image)
        chunks = [classes[i : i + chunk_size] for i in range(0, len(classes), chunk_size)]
        results = self._run_chunks(enc, chunks, decoder)
        found: dict[str, ClassResult] = {}
        names, decisions, name_tokens, unmatched, texts = [], [], [], [], []
        for chunk, row in zip(chunks, results, strict=True):
            texts.append(self.tokenizer.decode(row.ids, skip_special_tokens=False))
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
        verifier = self.model.verifier
        present, scores, logits, evidence = self._decide(enc, decisions, name_tokens, resized, original, verifier)
        for name, yes, score in zip(names, present, scores, strict=True):
            found[name] = ClassResult(name, yes, score)
        owners = [name for name, yes in zip(names, present, strict=True) if yes]
        for name, lg in zip(owners, logits, strict=True):
            found[name].mask = (lg > 0).cpu().numpy()
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
            text="\n".join(texts),
            unmatched=unmatched,
            logits=logits[keep].cpu() if keep else None,
            evidence=per_class,
        )

    @torch.no_grad()
    def segment_query(self, image: np.ndarray, query: str, max_new_tokens: int = 128) -> Prediction:
        """A referring or reasoning query: free decoding, one mask per `<ins>` in the answer (with a query verifier,
        per decision its fusion calls present; `Prediction.evidence` then holds the two log-odds of each)."""
        return self.segment_queries(image, [query], max_new_tokens)[0]

    @torch.no_grad()
    def segment_queries(self, image: np.ndarray, queries: list[str], max_new_tokens: int = 128) -> list[Prediction]:
        """`segment_query` for each of several queries about one image, which is encoded once; their answers are
        decoded together over one shared prefix (`answer_queries`)."""
        for query in queries:
            check_query(query, self.reserved)
        enc, resized, original = self.encode_image(image)
        # why not the presence verifier: a query's name is a phrase ("the star left of the red circle") whose truth it,
        # matching a region against a bag of words, cannot judge; with it, referring scored lower (model doc, step 33)
        verifier, picker = self.model.query_verifier, self.model.instance_picker
        predictions = []
        for row in self.answer_queries(enc, queries, max_new_tokens):
            decided = self._decide(enc, row.decisions, name_ids(row), resized, original, verifier, picker)
            _, scores, logits, evidence = decided
            predictions.append(
                Prediction(
                    image_size=original,
                    text=self.tokenizer.decode(row.ids, skip_special_tokens=False),
                    masks=[(lg > 0).cpu().numpy() for lg in logits],
                    scores=scores,
                    logits=logits.cpu(),
                    evidence=evidence,
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
        for query in queries:  # the prompt must leave room for the shortest answer, "<ins>."
            answered = self._encode(self._render([(query_question(query), prompts.refer_answer(1))]))
            check_query_context(answered, self.model.cfg, query)
        out = []
        for start in range(0, len(rows), QUERY_BATCH):
            batch = rows[start : start + QUERY_BATCH]
            shared = _common_prefix(batch)
            prefix = encode_prefix(self.model, enc, 0, batch[0][:shared])
            suffixes = [r[shared:] for r in batch]
            out += decode_free(self.model, prefix, suffixes, self.ids, max_new_tokens=max_new_tokens)
        return out

    @torch.no_grad()
    def chat(self, image: np.ndarray, text: str, max_new_tokens: int = 256) -> str:
        check_query(text, self.reserved, "text")
        enc, _, _ = self.encode_image(image)
        row = self._generate(enc, prompts.chat_question(text), max_new_tokens)
        return self.tokenizer.decode(row.ids, skip_special_tokens=True).strip()

    def _generate(self, enc, question: str, max_new_tokens: int) -> RowResult:
        ids = self._encode(self._render([(question, None)]))
        check_query_context([*ids, self.ids.eos], self.model.cfg, question.removeprefix(prompts.IMAGE_PREFIX), "text")
        prefix = encode_prefix(self.model, enc, 0, ids[:-1])
        return decode_free(self.model, prefix, [ids[-1:]], self.ids, max_new_tokens=max_new_tokens)[0]


def llm_log_odds(scores: torch.Tensor) -> torch.Tensor:
    """P(`<ins>`) of decisions -> the log-odds a verifier's fusion weighs, clamped so a sure answer stays finite."""
    return torch.logit(scores.float(), eps=1e-6)


def name_ids(row: RowResult) -> list[list[int]]:
    """Per decision of an answer, the ids since the previous decision (or the answer's start): the name it answers,
    as the presence verifier reads it in training (`model.verifier.name_spans`)."""
    out, start = [], 0
    for d in row.decisions:
        out.append(row.ids[start : d.index])
        start = d.index + 1
    return out


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving every row at least one token of its own."""
    limit = min(len(r) for r in rows) - 1
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n
