"""prompts.py: the one home of every template; exact strings, canonical forms, one rng draw per list, layering."""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasagna import prompts
from lasagna.tokens import IMAGE, INS, NO_INS


def test_templates_shape():
    questions = [
        *prompts.SINGLE_CLASS_QUESTIONS,
        *prompts.REFER_QUESTIONS,
        *prompts.REASON_SENTENCE_QUESTIONS,
        prompts.SEMANTIC_QUESTION,
        prompts.EXPLAIN_QUESTION,
    ]
    assert all(q.startswith(IMAGE + "\n") and q.count(IMAGE) == 1 for q in questions)
    assert all(a.count(INS) == 1 and NO_INS not in a for a in prompts.REFER_ANSWERS)
    # target or not is told only by the slot: the rest of each no-target sentence is a target sentence
    assert [a.replace(NO_INS, INS) for a in prompts.NO_TARGET_ANSWERS] == list(prompts.REFER_ANSWERS)
    assert prompts.mask_list(1) == INS and prompts.mask_list(2) == "<ins> and <ins>"
    assert prompts.mask_list(3) == "<ins>, <ins> and <ins>"
    assert prompts.SEMANTIC_INSTRUCTIONS[0] == "Segment this image."
    with pytest.raises(ValueError, match="at least one mask"):
        prompts.mask_list(0)


def test_canonical_strings_are_exact():
    """The strings inference and evaluation ask (the eval numbers depend on them, byte for byte)."""
    assert prompts.semantic_question(["Sky", "red circle"]) == (
        "<image>\n<semantic>Segment this image.<cat_start> sky, red circle <cat_end>"
    )
    assert prompts.semantic_answer(["Sky", "red circle"]) == "sky<ins>red circle<ins>"
    assert prompts.semantic_answer(["sky", "tree"], [True, False]) == "sky<ins>tree<no_ins>"
    assert prompts.query_question("  the red star ") == (
        "<image>\nWhat is the red star in this image? Please output segmentation mask."
    )
    assert prompts.query_question("Which shape is red?") == "<image>\nWhich shape is red?"
    assert prompts.reasoning_question(" What  holds water? ", True) == (
        "What holds water? Please output segmentation mask."
    )
    assert prompts.reasoning_question("The Cup.", False) == (
        "What is the cup in this image? Please output segmentation mask."
    )
    assert prompts.single_class_question("sky") == (
        "<image>\nWhat is the sky in this image? Please output segmentation mask."
    )
    assert prompts.chat_question(" How many? ") == "<image>\nHow many?"
    assert prompts.refer_answer(0) == "<no_ins>." and prompts.refer_answer(1) == "<ins>."
    assert prompts.refer_answer(3) == "<ins>, <ins> and <ins>."
    assert prompts.echo_answer("the red circle", False) == "the red circle<no_ins>."
    assert prompts.explain_answer("<ins>.", "It holds water.") == "<ins>. It holds water."
    with pytest.raises(ValueError, match="2 classes but 1 presence flags"):
        prompts.semantic_answer(["a", "b"], [True])


def test_render_llava_v1():
    text = prompts.render([("<image>\nq1", "a1"), ("q2", None)], "</s>")
    assert text == (prompts.SYSTEM + " USER: <im_start><image><im_end>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:")
    assert prompts.render([("<image>\nq", None)], "</s>", wrap_image=False).endswith("USER: <image>\nq ASSISTANT:")
    with pytest.raises(ValueError, match="only the last round"):
        prompts.render([("q1", None), ("q2", "a")], "</s>")


@pytest.mark.parametrize(
    ("fill", "options"),
    [
        (lambda rng: prompts.semantic_question(["sky"], rng), prompts.SEMANTIC_INSTRUCTIONS),
        (lambda rng: prompts.single_class_question("sky", rng), prompts.SINGLE_CLASS_QUESTIONS),
        (lambda rng: prompts.refer_question("it", rng), prompts.REFER_QUESTIONS),
        (lambda rng: prompts.reason_question("Why?", True, rng), prompts.REASON_SENTENCE_QUESTIONS),
        (lambda rng: prompts.explain_question("Why?", rng), prompts.EXPLAIN_INSTRUCTIONS),
        (lambda rng: prompts.refer_answer(1, rng), prompts.REFER_ANSWERS),
        (lambda rng: prompts.refer_answer(0, rng), prompts.NO_TARGET_ANSWERS),
        (lambda rng: prompts.refer_answer(2, rng), prompts.REFER_MULTI_ANSWERS),
    ],
)
def test_training_draws_one_choice_and_inference_the_first(fill, options):
    """Training's text depends on the rng's sequence: each filler draws exactly one `rng.choice` of its list; without
    an rng it is the canonical first form, so test-time prompts are in the training distribution."""
    for seed in range(20):
        rng, twin = random.Random(seed), random.Random(seed)
        text = fill(rng)
        index = options.index(twin.choice(options))
        assert rng.getstate() == twin.getstate()
        assert text == fill(_FixedChoice(index))
    assert fill(None) == fill(_FixedChoice(0))


class _FixedChoice(random.Random):
    def __init__(self, index: int):
        super().__init__(0)
        self.index = index

    def choice(self, seq):
        return seq[self.index]


@given(st.lists(st.text(st.characters(blacklist_characters=",<>"), min_size=1).map(str.strip).filter(bool), max_size=8))
def test_semantic_question_lists_the_names_back(names):
    question = prompts.semantic_question(names)
    listed = question.split("<cat_start> ", 1)[1].rsplit(" <cat_end>", 1)[0]
    assert listed == ", ".join(n.lower() for n in names)
    assert [m.group(1) for m in re.finditer(r"(.*?)<ins>", prompts.semantic_answer(names), re.S)] == [
        n.lower() for n in names
    ]


def test_prompts_imports_only_the_bottom_layer():
    """prompts.py sits beside tokens.py and config.py: data/, model/ and infer/ build on it, never the reverse."""
    tree = ast.parse(Path(prompts.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    package = {m for m in imported if m.startswith(".") or m.startswith("lasagna")}
    assert package <= {".tokens", ".config"}, package


def test_no_other_template_module():
    src = Path(prompts.__file__).parent
    assert not (src / "data" / "templates.py").exists()
