from __future__ import annotations

import argparse
import io
import json
import random
import re

import numpy as np
import pytest

from lasagna import prompts
from lasagna.data import cli as data_cli
from lasagna.data.mixture import Mixture, MixtureConfig
from lasagna.data.records import (
    IGNORE_LABEL,
    Expression,
    ReasonRecord,
    ReferRecord,
    SemanticRecord,
    VQARecord,
)
from lasagna.data.sources.base import RecordSource
from lasagna.data.tasks import (
    Conversation,
    ReasonTaskConfig,
    ReferTaskConfig,
    SemanticTaskConfig,
    TasksConfig,
    VQATaskConfig,
    format_record,
)
from lasagna.tokens import IMAGE, INS, NO_INS

CLASSES = ("Wall", "Bed", "Sky", "Tree", "Floor")  # wall, bed, sky are in the image; tree, floor are not
LABEL = np.array(
    [
        [0, 0, 1, 1],
        [0, 2, 2, 1],
        [IGNORE_LABEL, 2, 2, 1],
    ]
)
IMAGE_3x4 = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)
ITEM_RE = re.compile(f"(.*?)({re.escape(INS)}|{re.escape(NO_INS)})")


def semantic_record(classes=CLASSES, label=LABEL) -> SemanticRecord:
    image = np.zeros((*label.shape, 3), np.uint8)
    return SemanticRecord("img0", lambda: image, lambda: label, classes)


def semantic(seed: int = 5, **kwargs):
    cfg = TasksConfig(semantic=SemanticTaskConfig(**kwargs))
    return format_record(semantic_record(), random.Random(seed), cfg)


def listed(question: str) -> list[str]:
    return question.split("<cat_start> ")[1].split(" <cat_end>")[0].split(", ")


def items(answer: str) -> list[tuple[str, str]]:
    parsed = ITEM_RE.findall(answer)
    assert "".join(name + token for name, token in parsed) == answer  # nothing outside the items
    return parsed


def test_semantic_default_exact_text():
    sample = semantic()
    (conv,) = sample.conversations
    assert conv.question == (
        "<image>\n<semantic>Can you segment this image?<cat_start> tree, wall, bed, floor, sky <cat_end>"
    )
    assert conv.answer == "tree<no_ins>wall<ins>bed<ins>floor<no_ins>sky<ins>"
    assert sample.meta.classes_present == ["wall", "bed", "sky"]
    assert sample.meta.classes_absent == ["tree", "floor"]


def test_negatives_off_keeps_question_drops_absent_items():
    on, off = semantic(), semantic(negatives_in_answer=False)
    assert off.conversations[0].question == on.conversations[0].question
    assert off.conversations[0].answer == "wall<ins>bed<ins>sky<ins>"


def test_answer_order_question_vs_shuffled():
    ordered = semantic(answer_order="question").conversations[0]
    assert [name for name, _ in items(ordered.answer)] == listed(ordered.question)
    shuffled = semantic(answer_order="shuffled").conversations[0]
    assert listed(shuffled.question) == ["tree", "wall", "bed", "floor", "sky"]
    assert shuffled.answer == "bed<ins>wall<ins>floor<no_ins>sky<ins>tree<no_ins>"


def test_full_class_list_asks_every_class_answers_a_subset():
    conv = semantic(seed=0, class_list="full", list_length=(4, 4)).conversations[0]
    assert conv.question.endswith("<cat_start> wall, sky, tree, bed, floor <cat_end>")
    assert conv.answer == "wall<ins>sky<ins>bed<ins>floor<no_ins>"
    random_list = semantic(seed=0, class_list="random", list_length=(4, 4)).conversations[0]
    assert sorted(listed(random_list.question)) == sorted(name for name, _ in items(random_list.answer))


def test_single_class_baseline():
    sample = semantic(seed=0, single_class=True, max_conversations=2)
    assert [(c.question, c.answer) for c in sample.conversations] == [
        ("<image>\nWhat is the bed in this image? Please output segmentation mask.", "<ins>"),
        ("<image>\nPlease segment the sky in this image.", "<ins>"),
    ]
    assert sample.meta.classes_present == ["bed", "sky"]
    np.testing.assert_array_equal(sample.conversations[0].masks[0], LABEL == 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"negatives_in_answer": False},
        {"answer_order": "shuffled"},
        {"class_list": "full"},
        {"class_list": "full", "answer_order": "shuffled", "list_length": (80, 80)},
        {"list_length": (1, 2)},
        {"single_class": True},
        {"min_pixels": 4},
    ],
)
def test_masks_follow_answer_order_and_avoid_ignore(kwargs):
    ids = {name.lower(): i for i, name in enumerate(CLASSES)}
    for seed in range(20):
        sample = semantic(seed, **kwargs)
        assert sample.ignore is not None
        np.testing.assert_array_equal(sample.ignore, LABEL == IGNORE_LABEL)
        for conv in sample.conversations:
            assert conv.question.count(IMAGE) == 1 and conv.question.startswith(IMAGE + "\n")
            assert conv.masks.shape[0] == conv.answer.count(INS)
            assert not (conv.masks & sample.ignore).any()
            if kwargs.get("single_class"):
                names = [re.search(r"the (\w+) in", conv.question).group(1)]
            else:
                names = [name for name, token in items(conv.answer) if token == INS]
                assert set(listed(conv.question)) >= {name for name, _ in items(conv.answer)}
            for mask, name in zip(conv.masks, names, strict=True):
                np.testing.assert_array_equal(mask, ids[name] == LABEL)


def test_list_length_never_drops_present_and_respects_bounds():
    for seed in range(50):
        conv = semantic(seed, list_length=(2, 4)).conversations[0]
        parsed = items(conv.answer)
        assert 3 <= len(parsed) <= 4  # at least the 3 present classes, at most max
        assert {"wall", "bed", "sky"} <= {name for name, token in parsed if token == INS}
    lengths = {len(items(semantic(seed, list_length=(1, 80)).conversations[0].answer)) for seed in range(50)}
    assert lengths == {3, 4, 5}  # capped at the dataset's 5 classes


def test_more_present_than_max_keeps_two_thirds():
    for seed in range(20):
        # 3 present > max 2: keep 2 * 2 // 3 = 1 present class, fill up to max with absent ones
        parsed = items(semantic(seed, list_length=(1, 2)).conversations[0].answer)
        assert [token for _, token in parsed] in ([INS, NO_INS], [NO_INS, INS])


def test_min_pixels_small_class_is_neither_present_nor_absent():
    # wall has 3 pixels: below min_pixels=4 it must not be answered at all (never a false <no_ins>).
    for seed in range(20):
        sample = semantic(seed, min_pixels=4)
        names = {name for name, _ in items(sample.conversations[0].answer)}
        assert "wall" not in names and {"bed", "sky"} <= names


def test_same_seed_same_sample():
    a, b = semantic(seed=11), semantic(seed=11)
    assert a.conversations[0].question == b.conversations[0].question
    assert a.conversations[0].answer == b.conversations[0].answer
    np.testing.assert_array_equal(a.conversations[0].masks, b.conversations[0].masks)


def test_class_name_with_special_token_is_rejected():
    record = semantic_record(classes=("wall", "bed<ins>", "sky"), label=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=r"class name of img0 'bed<ins>' contains the reserved token"):
        format_record(record, random.Random(0))


def test_bad_label_values_are_rejected():
    record = semantic_record(classes=("wall", "bed"), label=np.full((2, 2), 7))
    with pytest.raises(ValueError, match=r"label values must be 0\.\.1"):
        format_record(record, random.Random(0))


def test_more_than_255_classes_are_accepted():
    # 300 classes: 255 and 299 are ordinary class ids; only IGNORE_LABEL is void
    classes = tuple(f"class {i}" for i in range(300))
    label = np.array([[0, 255, 255], [299, IGNORE_LABEL, 254]])
    cfg = TasksConfig(semantic=SemanticTaskConfig(list_length=(1, 300)))
    sample = format_record(semantic_record(classes, label), random.Random(0), cfg)
    (conv,) = sample.conversations
    assert sorted(sample.meta.classes_present) == ["class 0", "class 254", "class 255", "class 299"]
    np.testing.assert_array_equal(sample.ignore, label == IGNORE_LABEL)
    for name, mask in zip(sample.meta.classes_present, conv.masks, strict=True):
        np.testing.assert_array_equal(mask, label == int(name.split()[1]))


def test_old_255_ignore_value_is_rejected_for_few_classes():
    record = semantic_record(classes=("wall", "bed"), label=np.array([[0, 1], [255, 1]]))
    with pytest.raises(ValueError, match=r"label values must be 0\.\.1 or -1"):
        format_record(record, random.Random(0))


def refer_record(*mask_counts: int) -> ReferRecord:
    def masks(k):
        out = np.zeros((k, 3, 4), bool)
        for i in range(k):
            out[i, i, i] = True
        return lambda: out

    expressions = tuple(Expression(f"The thing {k}.", masks(k)) for k in mask_counts)
    return ReferRecord("ref0", lambda: IMAGE_3x4, expressions)


def test_referring_echo_answers_repeat_the_expression_before_the_slot():
    cfg = TasksConfig(referring=ReferTaskConfig(answer_form="echo"))
    sample = format_record(refer_record(2, 0), random.Random(0), cfg)
    by_text = {re.search(r"the thing \d", c.question).group(0): c for c in sample.conversations}
    assert by_text["the thing 2"].answer == "the thing 2<ins>." and by_text["the thing 2"].masks.shape == (1, 3, 4)
    assert by_text["the thing 0"].answer == "the thing 0<no_ins>." and by_text["the thing 0"].masks.shape == (0, 3, 4)
    with pytest.raises(ValueError, match="needs multi_target 'union'"):
        ReferTaskConfig(answer_form="echo", multi_target="per_target")
    with pytest.raises(ValueError, match="answer_form must be"):
        ReferTaskConfig(answer_form="parrot")


def test_referring_union_per_target_and_no_target():
    record = refer_record(1, 3, 0)
    union = format_record(record, random.Random(0), TasksConfig(referring=ReferTaskConfig()))
    by_text = {re.search(r"the thing \d", c.question).group(0): c for c in union.conversations}
    assert by_text["the thing 3"].masks.shape == (1, 3, 4) and by_text["the thing 3"].masks.sum() == 3
    assert by_text["the thing 0"].answer in prompts.NO_TARGET_ANSWERS
    assert by_text["the thing 0"].masks.shape == (0, 3, 4)
    assert union.meta.classes_absent == ["the thing 0"] and union.ignore is None

    cfg = TasksConfig(referring=ReferTaskConfig(multi_target="per_target"))
    per_target = format_record(refer_record(3), random.Random(1), cfg).conversations[0]
    assert per_target.question == "<image>\nCan you segment the thing 3 in this image?"
    assert per_target.answer == "They are <ins>, <ins> and <ins>."
    assert per_target.masks.shape == (3, 3, 4) and per_target.masks.sum(axis=(1, 2)).tolist() == [1, 1, 1]


def test_referring_samples_at_most_max_expressions():
    record = refer_record(*([1] * 9))
    sample = format_record(record, random.Random(0), TasksConfig(referring=ReferTaskConfig(max_expressions=5)))
    assert len(sample.conversations) == 5
    assert all(c.answer.count(INS) == 1 and c.answer in prompts.REFER_ANSWERS for c in sample.conversations)


def reason_record(explanation=None, is_sentence=True) -> ReasonRecord:
    mask = np.array([[0, 1, 1, IGNORE_LABEL], [0, 1, 0, IGNORE_LABEL], [0, 0, 0, 0]], np.int64)
    return ReasonRecord("rs0", lambda: IMAGE_3x4, ("What holds the water?",), is_sentence, lambda: mask, explanation)


def test_reasoning_target_ignore_and_explanatory():
    sample = format_record(reason_record(), random.Random(0))
    (conv,) = sample.conversations
    assert conv.question in [t.format(text="What holds the water?") for t in prompts.REASON_SENTENCE_QUESTIONS]
    assert conv.masks[0].sum() == 3 and not (conv.masks[0] & sample.ignore).any()
    assert sample.ignore.sum() == 2

    always = TasksConfig(reasoning=ReasonTaskConfig(explanatory=1.0))
    conv = format_record(reason_record("The cup holds it."), random.Random(0), always).conversations[0]
    assert conv.answer.endswith(" The cup holds it.") and conv.answer.count(INS) == 1
    assert conv.question.startswith("<image>\nWhat holds the water? Please")
    never = TasksConfig(reasoning=ReasonTaskConfig(explanatory=0.0))
    conv = format_record(reason_record("The cup holds it."), random.Random(0), never).conversations[0]
    assert "cup" not in conv.answer

    phrase = format_record(reason_record(is_sentence=False), random.Random(0)).conversations[0]
    assert phrase.question in [t.format(text="what holds the water?") for t in prompts.REFER_QUESTIONS]


def test_reasoning_mask_with_old_255_ignore_is_rejected():
    mask = np.array([[0, 1, 1, 255], [0, 1, 0, 255], [0, 0, 0, 0]], np.uint8)
    record = ReasonRecord("rs0", lambda: IMAGE_3x4, ("What holds the water?",), True, lambda: mask)
    with pytest.raises(ValueError, match=r"reasoning mask values must be 0, 1 or -1, found \[255\]"):
        format_record(record, random.Random(0))


def test_vqa_rounds():
    record = VQARecord("vqa0", lambda: IMAGE_3x4, (("What is it?", "A cat.\nIt sleeps."), ("Colour?", "Grey.")))
    (conv,) = format_record(record, random.Random(0)).conversations
    assert conv.rounds == [("<image>\nWhat is it?", "A cat.\nIt sleeps."), ("Colour?", "Grey.")]
    assert conv.masks.shape == (0, 3, 4)
    short = format_record(record, random.Random(0), TasksConfig(vqa=VQATaskConfig(max_rounds=1)))
    assert short.conversations[0].followups == ()
    bad = VQARecord("vqa1", lambda: IMAGE_3x4, (("Say <no_ins>", "no"),))
    with pytest.raises(ValueError, match="<no_ins>"):
        format_record(bad, random.Random(0))


def test_conversation_checks_mask_count_and_image_token():
    with pytest.raises(ValueError, match="has 2 <ins> but 1 masks"):
        Conversation("<image>\nq", "a<ins>b<ins>", np.zeros((1, 2, 2), bool))
    with pytest.raises(ValueError, match="exactly one <image>"):
        Conversation("q", "a", np.zeros((0, 2, 2), bool))
    with pytest.raises(TypeError, match="cannot format a str"):
        format_record("not a record", random.Random(0))


def test_preview_prints_one_json_line_per_conversation(monkeypatch):
    source = RecordSource("toy-refer", "referring", (refer_record(1, 0),))
    monkeypatch.setattr(data_cli, "open_preview_source", lambda *args: source)
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "preview", "toy", "--n", "3", "--seed", "2"])
    out = io.StringIO()
    assert args.func(args, out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    expected = format_record(source[0], random.Random(2), source="toy-refer")
    for line, conv in zip(lines, expected.conversations, strict=True):
        assert line["image"] == "ref0"
        assert (line["question"], line["answer"]) == (conv.question, conv.answer)
        assert line["num_masks"] == conv.masks.shape[0]
        assert line["classes_present"] == ["the thing 1"] and line["classes_absent"] == ["the thing 0"]


def test_preview_rejects_task_of_another_source(monkeypatch):
    monkeypatch.setattr(data_cli, "open_source", lambda name, root, split: RecordSource(name, "vqa", ()))
    with pytest.raises(ValueError, match="is a vqa source; --task semantic"):
        data_cli.open_preview_source("llava-instruct", None, "train", "semantic")


@pytest.mark.parametrize("task", ["semantic", "referring", "reasoning", "vqa"])
def test_preview_of_shapeworld_end_to_end(task):
    args = argparse.Namespace(source="shapeworld", root=None, split="val", task=task, n=2, seed=0)
    out = io.StringIO()
    assert data_cli.run_preview(args, out=out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines and {line["image"] for line in lines} == {"shapeworld/val/0000000", "shapeworld/val/0000001"}
    for line in lines:
        assert line["question"].startswith("<image>\n") and line["num_masks"] == line["answer"].count(INS)


def test_uniform_list_sampling_lists_present_and_absent_classes_alike():
    listed = {"present": 0, "absent": 0}
    for seed in range(300):
        parsed = items(semantic(seed, list_length=(2, 2), list_sampling="uniform").conversations[0].answer)
        assert len(parsed) == 2
        for name, token in parsed:
            assert (token == INS) == (name in {"wall", "bed", "sky"})  # present ones still get <ins>
            listed["present" if token == INS else "absent"] += 1
    # 2 of the 5 classes per list: each class is listed with probability 2/5, present (3 classes) or absent (2)
    assert abs(listed["present"] / 300 - 3 * 2 / 5) < 0.15 and abs(listed["absent"] / 300 - 2 * 2 / 5) < 0.15
    with pytest.raises(ValueError, match="list_sampling"):
        SemanticTaskConfig(list_sampling="balanced")


def near_miss_record() -> SemanticRecord:
    """Only "red square" is present; of the 4 absent classes, "red circle" alone shares a word with it."""
    classes = ("red square", "red circle", "blue star", "green heart", "blue circle")
    return semantic_record(classes=classes, label=np.zeros((2, 2), np.int64))


def test_confusable_weight_draws_absent_near_misses_more_often():
    record = near_miss_record()

    def near_misses(weight: float) -> int:
        cfg = TasksConfig(semantic=SemanticTaskConfig(list_length=(2, 2), confusable_weight=weight))
        answers = [format_record(record, random.Random(seed), cfg).conversations[0].answer for seed in range(200)]
        assert all(("red square", INS) in items(a) for a in answers)
        return sum(("red circle", NO_INS) in items(a) for a in answers)

    assert 30 <= near_misses(1.0) <= 70  # 1 of 4 absent classes: about 50 of 200
    assert near_misses(20.0) >= 160  # 20 / 23 of the draws: about 174
    with pytest.raises(ValueError, match="confusable_weight must be > 0"):
        SemanticTaskConfig(confusable_weight=0)
    with pytest.raises(ValueError, match="'uniform' lists do not"):
        SemanticTaskConfig(list_sampling="uniform", confusable_weight=2)


def test_confusable_from_switches_the_near_miss_weight_at_a_mixture_item():
    record = near_miss_record()

    def answers(from_item: int | None, weight: float, item: int | None) -> list[str]:
        semantic = SemanticTaskConfig(list_length=(2, 2), confusable_weight=weight)
        if from_item is not None:
            semantic.confusable_from = from_item
        cfg = TasksConfig(semantic=semantic)
        return [format_record(record, random.Random(s), cfg, item=item).conversations[0].answer for s in range(200)]

    # before the switch the draw is weight 1's, sample for sample; from it on, and outside a mixture, weight 20's
    assert answers(100, 20.0, item=99) == answers(None, 1.0, item=99)
    assert answers(100, 20.0, item=100) == answers(None, 20.0, item=100) == answers(100, 20.0, item=None)
    assert answers(None, 1.0, item=0) != answers(None, 20.0, item=0)  # the weight does change these draws
    with pytest.raises(ValueError, match="confusable_from must be a mixture item index >= 0"):
        SemanticTaskConfig(confusable_from=-1)


def test_a_mixture_gives_each_sample_its_index_for_confusable_from():
    source = RecordSource("near", "semantic", (near_miss_record(),))

    def answers(weight: float, from_item: int) -> list[str]:
        cfg = MixtureConfig(task_weights={"semantic": 1.0})
        cfg.tasks.semantic = SemanticTaskConfig(list_length=(2, 2), confusable_weight=weight, confusable_from=from_item)
        mixture = Mixture({"near": source}, cfg, seed=0, length=400)
        return [mixture[i].conversations[0].answer for i in range(400)]

    switched, plain, weighted = answers(20.0, 200), answers(1.0, 0), answers(20.0, 0)
    assert switched[:200] == plain[:200] and switched[200:] == weighted[200:]
    assert plain[200:] != weighted[200:]


def test_training_text_holding_the_tokenizers_end_of_sequence_is_refused():
    """ "</s>" in a class name or query would be tokenized as the end of sequence inside the prompt."""
    from lasagna.data.tasks_common import user_text
    from lasagna.tokens import ReservedTextError

    with pytest.raises(ReservedTextError, match=r"\['</s>'\]"):
        user_text("fruit</S>", "class name", "photo0")
