"""Referring, reasoning and VQA records -> conversations.

Referring phrases and short reasoning phrases are lower-cased and lose a trailing period, as they are slotted
into a sentence ("Can you segment {text} in this image?"); reasoning sentences and VQA text keep their case.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lasagna.data.records import IGNORE_LABEL, ReasonRecord, ReferRecord, VQARecord
from lasagna.data.tasks_common import Conversation, Sample, SampleMeta, load_image, no_masks, user_text
from lasagna.prompts import (
    chat_question,
    echo_answer,
    explain_answer,
    explain_question,
    reason_question,
    refer_answer,
    refer_question,
)
from lasagna.tokens import check_user_text


@dataclass
class ReferTaskConfig:
    """How a referring record becomes conversations, one per sampled expression.

    max_expressions: expressions sampled (without replacement) per image; the released code uses 5.
    multi_target: an expression with K > 1 targets is answered with one `<ins>` for the union of its targets
        ("union", default) or one `<ins>` per target ("per_target": "Sure, they are <ins>, <ins> and <ins>.").
        Union is the default because it keeps one meaning for `<ins>` across tasks: in the semantic task one
        `<ins>` already covers every instance of a class, so here it covers everything the phrase describes. It is
        also what the released code trains (gRefCOCO targets are unioned) and what cIoU / gIoU score.
    An expression with no target is answered with one of prompts.NO_TARGET_ANSWERS and no mask.
    answer_form: "sentence" (default, the released answers: "Sure, it is <ins>.") or "echo": the expression itself
        then the slot, "the red circle<ins>." / "the red circle<no_ins>." (prompts.REFER_ECHO_ANSWER). why: the
        state that prompts the mask decoder then sits on the phrase's last word, as in a semantic answer, instead of
        on "is", from where a small LLM trained from scratch must find the phrase again (docs/history.md). Echo needs
        multi_target "union": one slot per expression.
    """

    max_expressions: int = 5
    multi_target: Literal["per_target", "union"] = "union"
    answer_form: Literal["sentence", "echo"] = "sentence"

    def __post_init__(self) -> None:
        if self.max_expressions < 1:
            raise ValueError(f"max_expressions must be >= 1, got {self.max_expressions}")
        if self.multi_target not in ("per_target", "union"):
            raise ValueError(f"multi_target must be 'per_target' or 'union', got {self.multi_target!r}")
        if self.answer_form not in ("sentence", "echo"):
            raise ValueError(f"answer_form must be 'sentence' or 'echo', got {self.answer_form!r}")
        if self.answer_form == "echo" and self.multi_target != "union":
            raise ValueError("answer_form 'echo' has one slot per expression: it needs multi_target 'union'")


@dataclass
class ReasonTaskConfig:
    """How a reasoning record becomes conversations, one per sampled query.

    max_queries: queries sampled per image (the released code uses 5).
    explanatory: probability that a query of a record with an explanation asks for it; the answer is then the
        mask answer followed by the explanation (the paper's 0.1).
    """

    max_queries: int = 5
    explanatory: float = 0.1

    def __post_init__(self) -> None:
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {self.max_queries}")
        if not 0.0 <= self.explanatory <= 1.0:
            raise ValueError(f"explanatory must be a probability in [0, 1], got {self.explanatory}")


@dataclass
class VQATaskConfig:
    """max_rounds: keep at most this many (question, answer) rounds of a chat; None keeps them all."""

    max_rounds: int | None = None

    def __post_init__(self) -> None:
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1 or None, got {self.max_rounds}")


def format_refer(record: ReferRecord, rng: random.Random, cfg: ReferTaskConfig, source: str = "") -> Sample:
    """One conversation per sampled expression; meta lists phrases with targets as present, without as absent."""
    image = load_image(record.load_image, record.image_id)
    size = image.shape[:2]
    chosen = rng.sample(record.expressions, min(len(record.expressions), cfg.max_expressions))
    conversations, present, absent = [], [], []
    for expression in chosen:
        text = _phrase(expression.text, "referring expression", record.image_id)
        masks = _target_masks(expression.load_masks(), size, record.image_id, text)
        question = refer_question(text, rng)
        if cfg.answer_form == "echo":
            answer = echo_answer(text, len(masks) > 0)
            masks = masks.any(axis=0, keepdims=True) if len(masks) else masks
        elif len(masks) == 0:
            answer = refer_answer(0, rng)
        elif len(masks) == 1 or cfg.multi_target == "union":
            answer = refer_answer(1, rng)
            masks = masks.any(axis=0, keepdims=True)
        else:
            answer = refer_answer(len(masks), rng)
        conversations.append(Conversation(question, answer, masks))
        (present if len(masks) else absent).append(text)
    meta = SampleMeta(source, record.image_id, "referring", classes_present=present, classes_absent=absent)
    return Sample(image, conversations, None, meta)


def format_reason(record: ReasonRecord, rng: random.Random, cfg: ReasonTaskConfig, source: str = "") -> Sample:
    """One conversation per sampled query, all about the record's one target (mask == 1; IGNORE_LABEL is ignore)."""
    image = load_image(record.load_image, record.image_id)
    mask = np.asarray(record.load_mask())
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{record.image_id}: reasoning mask {mask.shape} does not match the image {image.shape[:2]}")
    unexpected = np.setdiff1d(mask, [0, 1, IGNORE_LABEL])
    if unexpected.size:
        raise ValueError(
            f"{record.image_id}: reasoning mask values must be 0, 1 or {IGNORE_LABEL}, found {unexpected[:5].tolist()}"
        )
    target = (mask == 1)[None]
    ignore = mask == IGNORE_LABEL
    explanation = None
    if record.explanation is not None:
        explanation = user_text(record.explanation, "explanation", record.image_id)
    conversations = []
    for query in rng.sample(record.queries, min(len(record.queries), cfg.max_queries)):
        if record.is_sentence:
            text = user_text(query, "reasoning query", record.image_id)
        else:
            text = _phrase(query, "reasoning query", record.image_id)
        answer = refer_answer(1, rng)
        if explanation is not None and rng.random() < cfg.explanatory:
            question = explain_question(text, rng)
            answer = explain_answer(answer, explanation)
        else:
            question = reason_question(text, record.is_sentence, rng)
        conversations.append(Conversation(question, answer, target))
    return Sample(image, conversations, ignore, SampleMeta(source, record.image_id, "reasoning"))


def format_vqa(record: VQARecord, rng: random.Random, cfg: VQATaskConfig, source: str = "") -> Sample:
    """The record's chat as one conversation: "<image>\\n" before the first question, no masks.

    `rng` is unused (a chat is taken as it is); it is accepted so every formatter has one signature.
    """
    image = load_image(record.load_image, record.image_id)
    meta = SampleMeta(source, record.image_id, "vqa")
    turns = record.turns[: cfg.max_rounds] if cfg.max_rounds is not None else record.turns
    rounds = []
    for i, (question, answer) in enumerate(turns):
        # Chat text keeps its newlines (answers hold lists and paragraphs); it is only checked and stripped.
        where = f"VQA turn {i} of {record.image_id}"
        question = check_user_text(question, f"question of {where}").strip()
        rounds.append((question, check_user_text(answer, f"answer of {where}").strip()))
    if not rounds:
        return Sample(image, [], None, meta)
    (question, answer), *followups = rounds
    conversation = Conversation(chat_question(question), answer, no_masks(image.shape[:2]), tuple(followups))
    return Sample(image, [conversation], None, meta)


def _phrase(text: str, what: str, image_id: str) -> str:
    """A phrase to slot into a template: checked, single-spaced, lower-cased, without a trailing period."""
    phrase = user_text(text, what, image_id).lower().rstrip(". ")
    if not phrase:
        raise ValueError(f"{image_id}: {what} {text!r} is empty once its trailing period is removed")
    return phrase


def _target_masks(masks: np.ndarray, size: tuple[int, ...], image_id: str, text: str) -> np.ndarray:
    """Check an expression's (K, H, W) masks against the image and give them as bool."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != size:
        raise ValueError(f"{image_id}: masks of {text!r} must be (K, {size[0]}, {size[1]}), got {masks.shape}")
    return masks.astype(bool, copy=False)
