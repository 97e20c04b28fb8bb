"""Every prompt and answer template of LaSagnA, as data, and the small functions that fill them.

Training (`data/tasks_*.py`), inference (`infer/engine.py`) and evaluation (`eval/evaluate.py`) all read these, so a
prompt at test time is one the model was trained on. Written for this project (the released code's lists are not
copied). Conventions:
- the conversation is LLaVA v1: SYSTEM + " " + ("USER: " + q + " ASSISTANT: " + a + eos) per round; an open turn ends
  in "ASSISTANT:" (`render`);
- every first question starts with "<image>\\n" (`IMAGE_PREFIX`) and holds exactly one `<image>`;
- `{text}` is a referring phrase or reasoning sentence, `{name}` one class name, `{masks}` a list of `<ins>` tokens;
- index 0 of a list is the canonical form; every filler takes `rng`: None picks the canonical form (inference and
  evaluation), a `random.Random` picks any form (training), one `rng.choice` per list;
- answers never contain the eos string: `render` (inference) and the collate (training) close each answer.

This module sits at the bottom layer beside `tokens.py` and `config.py`: it imports nothing else of the package.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .tokens import CAT_END, CAT_START, IM_END, IM_START, IMAGE, INS, NO_INS, SEMANTIC

# The LLaVA v1 conversation.
SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
USER = "USER"
ASSISTANT = "ASSISTANT"
SEP = " "

IMAGE_PREFIX = IMAGE + "\n"

# Semantic complex query: "<image>\n<semantic>{instruction}<cat_start> c1, c2, ... <cat_end>".
SEMANTIC_QUESTION = IMAGE_PREFIX + SEMANTIC + "{instruction}" + CAT_START + " {classes} " + CAT_END
CLASS_SEPARATOR = ", "
SEMANTIC_INSTRUCTIONS: tuple[str, ...] = (
    "Segment this image.",
    "Please segment this image.",
    "Can you segment this image?",
    "Segment the listed classes in this image.",
    "Please segment every listed category in this image.",
    "Which of these classes are in this image? Please respond with segmentation masks.",
    "What is in this image? Please output a segmentation mask for each class.",
    "Find the listed categories in this image and segment them.",
    "Could you produce segmentation masks for these classes?",
    "Please give the semantic segmentation of this image.",
    "Segment all the objects and regions of these categories.",
)
# Answer items: a present class carries a mask, an absent one says so; items are joined with no separator.
PRESENT_ITEM = "{name}" + INS
ABSENT_ITEM = "{name}" + NO_INS

# LISA-style single-class query (the ablation baseline): one class per conversation, answer "<ins>".
SINGLE_CLASS_QUESTIONS: tuple[str, ...] = (
    IMAGE_PREFIX + "What is the {name} in this image? Please output segmentation mask.",
    IMAGE_PREFIX + "Can you segment the {name} in this image?",
    IMAGE_PREFIX + "Please segment the {name} in this image.",
    IMAGE_PREFIX + "Where is the {name} in this image? Please respond with a segmentation mask.",
)
SINGLE_CLASS_ANSWER = INS

# Referring phrases (also the short-phrase reasoning queries).
REFER_QUESTIONS: tuple[str, ...] = (
    IMAGE_PREFIX + "What is {text} in this image? Please output segmentation mask.",
    IMAGE_PREFIX + "Can you segment {text} in this image?",
    IMAGE_PREFIX + "Please segment {text}.",
    IMAGE_PREFIX + "Please segment {text} in this image.",
    IMAGE_PREFIX + "Segment {text}.",
    IMAGE_PREFIX + "Where is {text}? Please respond with a segmentation mask.",
    IMAGE_PREFIX + "Could you find {text} and segment it?",
    IMAGE_PREFIX + "Show me {text} with a segmentation mask.",
)
# One target (or the union of several).
REFER_ANSWERS: tuple[str, ...] = (
    INS + ".",
    "Sure, it is " + INS + ".",
    "Sure, " + INS + ".",
    "It is " + INS + ".",
    "Here is the segmentation mask: " + INS + ".",
    "Sure, the segmentation mask is " + INS + ".",
    "The segmentation result is " + INS + ".",
)
# Several targets, one `<ins>` each: {masks} is "<ins>, <ins> and <ins>".
REFER_MULTI_ANSWERS: tuple[str, ...] = (
    "{masks}.",
    "Sure, they are {masks}.",
    "They are {masks}.",
    "Sure, the segmentation masks are {masks}.",
    "Here are the segmentation masks: {masks}.",
)
# An expression that matches nothing (gRefCOCO no-target): the same sentences with `<no_ins>` in the slot, which
# keeps its semantic-task meaning "named but absent, no mask". So target or not is decided in that one token, as a
# class's presence is, where `loss.decision_weight` applies and inference reads it. A separate sentence ("There is no
# such object.") put the decision in its first word, against the seven first words of the sentences above, without
# the decision weight, and a model trained so rarely let that word win (docs/history.md).
NO_TARGET_ANSWERS: tuple[str, ...] = tuple(a.replace(INS, NO_INS) for a in REFER_ANSWERS)
# The echo form (`ReferTaskConfig.answer_form: echo`): the answer repeats the expression and puts the slot right after
# it, as a semantic answer puts each class name right before its `<ins>`/`<no_ins>`: "the red circle<ins>.".
REFER_ECHO_ANSWER = "{text}{slot}."

# Reasoning sentences: the query is a full sentence or question, the instruction follows it.
REASON_SENTENCE_QUESTIONS: tuple[str, ...] = (
    IMAGE_PREFIX + "{text} Please output segmentation mask.",
    IMAGE_PREFIX + "{text} Please respond with segmentation mask.",
    IMAGE_PREFIX + "{text} Please output a segmentation mask for the answer.",
    IMAGE_PREFIX + "{text} Answer with a segmentation mask.",
    IMAGE_PREFIX + "{text} Please segment the answer in this image.",
    IMAGE_PREFIX + "{text} Show the answer as a segmentation mask.",
)
# Explanatory mode: question "<image>\n{text} {instruction}", answer "<answer with <ins>> {explanation}".
EXPLAIN_QUESTION = IMAGE_PREFIX + "{text} {instruction}"
EXPLAIN_INSTRUCTIONS: tuple[str, ...] = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please segment the answer and give some explanation.",
    "Please respond with segmentation mask and explain your answer.",
)
EXPLAIN_ANSWER = "{answer} {explanation}"


def _pick(options: Sequence[str], rng: random.Random | None) -> str:
    """The canonical form (index 0) without `rng`, else one `rng.choice` (training draws exactly one per list)."""
    return options[0] if rng is None else rng.choice(options)


def render(rounds: list[tuple[str, str | None]], eos: str, wrap_image: bool = True) -> str:
    """Render (question, answer) rounds; an answer of None leaves the assistant turn open (inference).

    Only the last round may be open. `eos` is the tokenizer's end-of-sequence string, which closes each answer and
    is followed directly by the next "USER:" (llava_v1: sep " " after a question, sep2 = eos after an answer).
    """
    text = SYSTEM + SEP
    for i, (question, answer) in enumerate(rounds):
        if wrap_image:
            question = question.replace(IMAGE, IM_START + IMAGE + IM_END)
        text += f"{USER}: {question}{SEP}{ASSISTANT}:"
        if answer is None:
            if i != len(rounds) - 1:
                raise ValueError("only the last round may have no answer")
            break
        text += f" {answer}{eos}"
    return text


def semantic_question(classes: Sequence[str], rng: random.Random | None = None) -> str:
    """The complex query listing `classes` in order, lower-cased as training's names are."""
    names = CLASS_SEPARATOR.join(c.lower() for c in classes)
    return SEMANTIC_QUESTION.format(instruction=_pick(SEMANTIC_INSTRUCTIONS, rng), classes=names)


def semantic_answer(classes: Sequence[str], present: Sequence[bool] | None = None) -> str:
    """The answer items of `classes` in order, "name<ins>" when present (all, by default) and "name<no_ins>" when
    absent; lower-cased as `semantic_question`'s. Template decoding starts from all absent (`Engine.chunk_rows`)."""
    flags = [True] * len(classes) if present is None else list(present)
    if len(flags) != len(classes):
        raise ValueError(f"semantic_answer got {len(classes)} classes but {len(flags)} presence flags")
    return "".join(
        (PRESENT_ITEM if yes else ABSENT_ITEM).format(name=c.lower()) for c, yes in zip(classes, flags, strict=True)
    )


def single_class_question(name: str, rng: random.Random | None = None) -> str:
    """LISA-style question about one class (the ablation baseline); its answer is `SINGLE_CLASS_ANSWER`."""
    return _pick(SINGLE_CLASS_QUESTIONS, rng).format(name=name)


def refer_question(text: str, rng: random.Random | None = None) -> str:
    """A referring phrase (or a short reasoning phrase) slotted into a question."""
    return _pick(REFER_QUESTIONS, rng).format(text=text)


def reason_question(text: str, is_sentence: bool, rng: random.Random | None = None) -> str:
    """A reasoning query: a sentence is followed by an instruction, a phrase goes into a referring question."""
    if is_sentence:
        return _pick(REASON_SENTENCE_QUESTIONS, rng).format(text=text)
    return refer_question(text, rng)


def explain_question(text: str, rng: random.Random | None = None) -> str:
    """A reasoning query that asks for the mask and an explanation."""
    return EXPLAIN_QUESTION.format(text=text, instruction=_pick(EXPLAIN_INSTRUCTIONS, rng))


def explain_answer(answer: str, explanation: str) -> str:
    """A mask answer followed by its explanation."""
    return EXPLAIN_ANSWER.format(answer=answer, explanation=explanation)


def mask_list(count: int) -> str:
    """`count` `<ins>` tokens in English list form: "<ins>", "<ins> and <ins>", "<ins>, <ins> and <ins>"."""
    if count < 1:
        raise ValueError(f"mask_list needs at least one mask, got {count}")
    if count == 1:
        return INS
    return CLASS_SEPARATOR.join([INS] * (count - 1)) + " and " + INS


def refer_answer(masks: int, rng: random.Random | None = None) -> str:
    """The answer to a referring question with `masks` `<ins>` slots: 0 says "no target" with `<no_ins>` in the slot,
    1 has one `<ins>` (one target or the union of several), more list one `<ins>` per target."""
    if masks < 0:
        raise ValueError(f"refer_answer needs a mask count >= 0, got {masks}")
    if masks == 0:
        return _pick(NO_TARGET_ANSWERS, rng)
    if masks == 1:
        return _pick(REFER_ANSWERS, rng)
    return _pick(REFER_MULTI_ANSWERS, rng).format(masks=mask_list(masks))


def echo_answer(text: str, present: bool) -> str:
    """The echo form of a referring answer: the phrase, then its slot ("the red circle<ins>.")."""
    return REFER_ECHO_ANSWER.format(text=text, slot=INS if present else NO_INS)


def chat_question(text: str) -> str:
    """A free chat or VQA question about the image."""
    return IMAGE_PREFIX + text.strip()


def query_question(query: str) -> str:
    """An inference query: a phrase ("the red star") goes into the canonical referring question; a full question or
    instruction (ending in "?" or ".") is asked as it is."""
    query = query.strip()
    if query.endswith(("?", ".")):
        return IMAGE_PREFIX + query
    return refer_question(query)


def reasoning_question(query: str, is_sentence: bool) -> str:
    """A reasoning query as evaluation asks it, the way training asks it, without the image placeholder (it goes
    through `query_question`): single-spaced; a phrase lower-cased and without its trailing period."""
    query = " ".join(query.split())
    if not is_sentence:
        query = query.lower().rstrip(". ")
    return reason_question(query, is_sentence).removeprefix(IMAGE_PREFIX)
