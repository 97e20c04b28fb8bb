"""Instruction and answer templates of every task family, as data, defined once.

Written for this project (the released code's lists are not copied). Conventions:
- every question template starts with "<image>\\n" (LLaVA style) and holds exactly one `<image>`;
- `{text}` is a referring phrase or reasoning sentence, `{name}` one class name, `{masks}` a list of `<ins>` tokens;
- index 0 of a list is the canonical form that evaluation and inference use, so prompts at test time are in the
  training distribution; the rest only add variety during training;
- answers never contain the eos string: the collate closes each answer.
"""

from __future__ import annotations

from lasagna.tokens import CAT_END, CAT_START, IMAGE, INS, NO_INS, SEMANTIC

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
# the decision weight, and a model trained so rarely let that word win (docs/shapeworld-model.md, step 16).
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


def mask_list(count: int) -> str:
    """`count` `<ins>` tokens in English list form: "<ins>", "<ins> and <ins>", "<ins>, <ins> and <ins>"."""
    if count < 1:
        raise ValueError(f"mask_list needs at least one mask, got {count}")
    if count == 1:
        return INS
    return CLASS_SEPARATOR.join([INS] * (count - 1)) + " and " + INS
