from __future__ import annotations

import argparse
import itertools
import json
import pickle
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lasagna.data.records import IGNORE_LABEL, LABEL_PNG_IGNORE, ReasonRecord, ReferRecord, SemanticRecord, VQARecord
from lasagna.shapeworld import (
    COLOURS,
    HELD_OUT,
    SHAPES,
    STUFF,
    ShapeWorldReasoning,
    ShapeWorldReferring,
    ShapeWorldSemantic,
    ShapeWorldVQA,
    classes,
    holds_relation,
    reasoning_item,
    referring_items,
    scene,
    vqa_turns,
)
from lasagna.shapeworld import cli as shapeworld_cli
from lasagna.shapeworld.scene import OUTLINE_DARKEN, _cached_scene
from lasagna.shapeworld.textures import MEAN_COLOURS
from lasagna.shapeworld.vocab import plural

CLOSED = ("train", "val", "test")
SHAPE_WORDS = {**{s: s for s in SHAPES}, **{plural(s): s for s in SHAPES}}


def _scenes(split: str, n: int, start: int = 0):
    return [scene(split, i) for i in range(start, start + n)]


def test_same_split_and_index_give_identical_arrays():
    first = scene("train", 7)
    _cached_scene.cache_clear()
    again = scene("train", 7)
    assert first is not again
    for name in ("image", "semantic", "instances"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    assert first.objects == again.objects and first.stuff == again.stuff
    assert [i.text for i in referring_items(first)] == [i.text for i in referring_items(again)]
    assert reasoning_item(first) == reasoning_item(again)


def test_splits_differ_and_size_is_configurable():
    images = [scene(split, 0).image for split in (*CLOSED, "test-open")]
    for a, b in itertools.combinations(images, 2):
        assert not np.array_equal(a, b)
    small = scene("test", 3, 64)
    assert small.image.shape == (64, 64, 3) and small.semantic.shape == (64, 64)
    with pytest.raises(ValueError, match="known"):
        scene("training", 0)
    with pytest.raises(ValueError, match="size"):
        scene("test", 0, 8)


def test_held_out_choice_and_class_lists():
    assert len(HELD_OUT) == len(set(HELD_OUT)) == 12
    colours = Counter(n.split(" ")[0] for n in HELD_OUT)
    shapes = Counter(n.split(" ")[1] for n in HELD_OUT)
    assert set(colours) <= set(COLOURS) and set(shapes) <= set(SHAPES)
    assert max(colours.values()) <= 2 and max(shapes.values()) <= 2
    for split in CLOSED:
        names = classes(split)
        assert len(names) == 58 and names[:6] == STUFF and not set(HELD_OUT) & set(names)
    assert len(classes("test-open")) == 70 and set(HELD_OUT) <= set(classes("test-open"))


@pytest.mark.parametrize("split", CLOSED)
def test_closed_splits_never_show_or_say_held_out(split):
    held = re.compile("|".join(rf"\b{n}" for n in HELD_OUT))
    for sc in _scenes(split, 120):
        assert not {o.name for o in sc.objects} & set(HELD_OUT)
        texts = [i.text for i in referring_items(sc)] + list(reasoning_item(sc).queries)
        texts += [t for qa in vqa_turns(sc) for t in qa]
        assert not any(held.search(t) for t in texts), texts


def test_open_split_scenes_each_show_a_held_out_combination():
    for sc in _scenes("test-open", 60):
        assert {o.name for o in sc.objects} & set(HELD_OUT)
        assert sc.classes == classes("test-open")


def test_colours_are_far_apart_and_far_from_stuff():
    rgb = {k: np.asarray(v, float) for k, v in COLOURS.items()}
    for a, b in itertools.combinations(rgb.values(), 2):
        assert np.linalg.norm(a - b) >= 100
    for colour, stuff in itertools.product(rgb.values(), MEAN_COLOURS.values()):
        assert np.linalg.norm(colour - np.asarray(stuff)) >= 90


@pytest.mark.parametrize("split", ["train", "test-open"])
def test_labels_match_objects_pixel_for_pixel(split):
    for sc in _scenes(split, 40):
        names = sc.classes
        assert sc.semantic.dtype == np.int64 and sc.instances.dtype == np.int32 and sc.image.dtype == np.uint8
        assert [o.instance_id for o in sc.objects] == list(range(1, len(sc.objects) + 1))
        assert set(np.unique(sc.instances)) - {0} == {o.instance_id for o in sc.objects}
        for o in sc.objects:
            mask = sc.instance_mask(o.instance_id)
            rows, cols = np.nonzero(mask)
            assert mask.sum() == o.area > 0 and o.area <= o.full_area
            assert (sc.semantic[mask] == names.index(o.name)).all()
            assert o.bbox == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert o.centroid == pytest.approx((cols.mean() + 0.5, rows.mean() + 0.5))
            # Flat fill plus a darker outline: every pixel is one of those two colours, mostly the fill.
            rgb = np.asarray(COLOURS[o.colour])
            fill = np.all(sc.image[mask] == rgb, axis=1)
            edge = np.all(sc.image[mask] == np.rint(rgb * OUTLINE_DARKEN), axis=1)
            assert (fill | edge).all() and fill.mean() > 0.3
        background = sc.semantic[sc.instances == 0]
        assert (background < len(STUFF)).all()
        assert {names[i] for i in np.unique(background)} == set(sc.stuff)


def _parse(text: str):
    """(plural, head (colour, shape), extreme, relation, anchor) read back from an expression's words."""

    def phrase(words: str):
        ws = words.split()
        return next((w for w in ws if w in COLOURS), None), next((SHAPE_WORDS[w] for w in ws if w in SHAPE_WORDS), None)

    m = re.fullmatch(
        r"(the|all the) (.+?) (left of|to the left of|right of|to the right of|above|below) the (.+)", text
    )
    if m:
        rel = {"above": "top", "below": "bottom"}.get(m[3]) or m[3].split()[-2]
        return m[1] == "all the", phrase(m[2]), None, rel, phrase(m[4])
    m = re.fullmatch(r"(?:all the|every) (.+)", text)
    if m:
        return True, phrase(m[1]), None, None, None
    m = re.fullmatch(r"the (leftmost|rightmost|topmost|bottommost|large|biggest|small|smallest) (.+)", text)
    if m:
        word = {"biggest": "large", "smallest": "small"}.get(m[1], m[1].removesuffix("most"))
        return False, phrase(m[2]), word, None, None
    m = re.fullmatch(r"the (.+) (?:on|at) the (left|right|top|bottom)", text)
    if m:
        return False, phrase(m[1]), m[2], None, None
    m = re.fullmatch(r"the (.+)", text)
    assert m, text
    return False, phrase(m[1]), None, None, None


def _offset(obj, anchor, direction: str) -> float:
    axis, sign = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}[direction]
    return sign * (obj.centroid[axis] - anchor.centroid[axis])


def _check_expression(text: str, targets: tuple[int, ...], objects) -> None:
    many, (colour, shape), extreme, relation, anchor = _parse(text)
    match = [o for o in objects if colour in (None, o.colour) and shape in (None, o.shape)]
    if relation:
        anchors = [o for o in objects if anchor[0] in (None, o.colour) and anchor[1] in (None, o.shape)]
        assert len(anchors) == 1, text
        match = [o for o in match if o is not anchors[0] and _offset(o, anchors[0], relation) > 0]
    elif extreme and targets:
        key = {
            "large": lambda o: o.full_area,
            "small": lambda o: -o.full_area,
            "left": lambda o: -o.centroid[0],
            "right": lambda o: o.centroid[0],
            "top": lambda o: -o.centroid[1],
            "bottom": lambda o: o.centroid[1],
        }[extreme]
        ranked = sorted(match, key=key, reverse=True)
        assert len(ranked) >= 2 and key(ranked[0]) > key(ranked[1]), text
        match = ranked[:1]
    assert set(targets) == {o.instance_id for o in match}, text
    assert many or len(targets) <= 1, text


@pytest.mark.parametrize("split", ["train", "test-open"])
def test_every_referring_expression_is_true_for_its_scene(split):
    kinds = Counter()
    for sc in _scenes(split, 150):
        items = referring_items(sc)
        assert items and len({i.text for i in items}) == len(items)
        for item in items:
            _check_expression(item.text, item.targets, sc.objects)
            kinds["none" if not item.targets else "multi" if len(item.targets) > 1 else "single"] += 1
            kinds["relation"] += item.query.relation is not None
            kinds["extreme"] += item.query.extreme is not None
    assert min(kinds.values()) >= 20, kinds


def test_no_target_rate_is_about_fifteen_percent():
    items = [i for sc in _scenes("train", 200, start=1000) for i in referring_items(sc)]
    rate = sum(not i.targets for i in items) / len(items)
    assert 0.10 <= rate <= 0.20


def test_a_higher_no_target_rate_adds_absent_names_and_false_relations_and_keeps_them_true():
    scenes = _scenes("train", 100, start=2000)
    items = []
    for sc in scenes:
        for item in referring_items(sc, no_target_rate=0.5):
            _check_expression(item.text, item.targets, sc.objects)
            items.append(item)
    negatives = [i for i in items if not i.targets]
    assert 0.40 <= len(negatives) / len(items) <= 0.60
    assert sum(i.query.relation is not None for i in negatives) >= 0.2 * len(negatives)  # false relations too
    assert all(not i.targets for sc in scenes[:20] for i in referring_items(sc, no_target_rate=1.0))
    source = ShapeWorldReferring("train", 64, no_target_rate=1.0)
    assert all(len(e.load_masks()) == 0 for e in source[5].expressions)
    with pytest.raises(ValueError, match="no_target_rate"):
        ShapeWorldReferring("train", no_target_rate=1.5)


def test_twins_follow_each_relation_and_extreme_turned_the_opposite_way():
    opposite = {"left": "right", "top": "bottom", "large": "small"}
    opposite.update({v: k for k, v in opposite.items()})
    twins, relation_twins_without_target = 0, 0
    for sc in _scenes("train", 150, start=3000):
        plain, paired = referring_items(sc), referring_items(sc, twins=True)
        assert [i for i in paired if i in plain] == list(plain)  # the draws themselves are unchanged
        for before, item in itertools.pairwise(paired):
            if item in plain:
                continue
            twins += 1
            assert before in plain  # a twin follows its original
            _check_expression(item.text, item.targets, sc.objects)
            a, b = before.query, item.query
            assert (a.head, a.anchor, a.plural) == (b.head, b.anchor, b.plural)
            if a.relation is not None:
                assert b.relation == opposite[a.relation]
                relation_twins_without_target += not item.targets
            else:
                assert b.extreme == opposite[a.extreme]
            assert item.targets != before.targets  # another answer from the same words
    assert twins >= 100 and relation_twins_without_target >= 20
    source = ShapeWorldReferring("train", 64, twins=True)
    assert len(source[3].expressions) > len(ShapeWorldReferring("train", 64)[3].expressions)


@pytest.mark.parametrize("split", ["val", "test-open"])
def test_reasoning_targets_are_the_described_concept(split):
    for sc in _scenes(split, 80):
        item = reasoning_item(sc)
        mask = item.mask(sc)
        assert mask.dtype == np.uint8 and mask.any()
        words = item.concept.split()
        if item.stuff:
            expected = sc.stuff_mask(item.stuff)
        else:
            hit = [o.instance_id for o in sc.objects if set(words) <= {o.colour, o.shape}]
            expected = np.isin(sc.instances, hit)
        assert np.array_equal(mask.astype(bool), expected)
        assert len(set(item.queries)) == len(item.queries) == 3
        # The concept step is real: no query names the concept it describes.
        for query in item.queries:
            assert not any(re.search(rf"\b{w}\b", query) for w in words), query
            assert query.endswith(("?", ".")) == item.is_sentence


def test_vqa_answers_match_the_scene():
    for sc in _scenes("test", 80):
        for question, answer in vqa_turns(sc):
            m = re.fullmatch(r"How many (\w+) (?:shapes )?are (?:there|in the image)\?", question)
            if (m and m[1] == "shapes") or question == "How many objects are in the picture?":
                assert answer == str(len(sc.objects))
            elif m and m[1] in COLOURS:
                assert answer == str(sum(o.colour == m[1] for o in sc.objects))
            elif m:
                assert answer == str(sum(o.shape == SHAPE_WORDS[m[1]] for o in sc.objects))
            elif m := re.fullmatch(r"Is there a (\w+) (\w+) in the image\?", question):
                assert answer == ("yes" if f"{m[1]} {m[2]}" in {o.name for o in sc.objects} else "no")
            elif m := re.fullmatch(r"What colour is the (\w+)\?", question):
                assert [o.colour for o in sc.objects if o.shape == m[1]] == [answer]
            elif question.startswith("How many"):
                pytest.fail(f"unchecked question {question!r}")


def test_sources_return_typed_records_with_lazy_picklable_loaders():
    sem, ref = ShapeWorldSemantic("test", size=64, length=5), ShapeWorldReferring("test", size=64)
    rea, vqa = ShapeWorldReasoning("test-open", size=64), ShapeWorldVQA("train")
    assert (len(sem), len(ref), len(vqa)) == (5, 500, 100_000) and sem.task == "semantic" and vqa.task == "vqa"
    with pytest.raises(IndexError):
        sem[5]

    record = sem[2]
    assert isinstance(record, SemanticRecord) and record.classes == classes("test")
    before = _cached_scene.cache_info()
    image, label = pickle.loads(pickle.dumps(record.load_image))(), record.load_label()
    assert _cached_scene.cache_info().misses - before.misses <= 1  # image and label share one render
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and label.dtype == np.int64
    assert label.max() < len(record.classes)

    rr = pickle.loads(pickle.dumps(ref[3]))  # whole records travel to DataLoader workers
    assert isinstance(rr, ReferRecord) and rr.expressions
    for expression, item in zip(rr.expressions, referring_items(scene("test", 3, 64)), strict=True):
        masks = expression.load_masks()
        assert masks.dtype == bool and masks.shape == (len(item.targets), 64, 64)
        assert all(m.any() for m in masks)

    reason = rea[4]
    assert isinstance(reason, ReasonRecord) and reason.queries and reason.explanation
    assert reason.load_mask().shape == (64, 64) and set(np.unique(reason.load_mask())) == {0, 1}

    chat = vqa[9]
    assert isinstance(chat, VQARecord) and len(chat.turns) == 3
    assert all(isinstance(q, str) and isinstance(a, str) and a for q, a in chat.turns)


def test_render_command_writes_images_labels_and_annotations(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    shapeworld_cli.register(parser.add_subparsers())
    out = tmp_path / "out"
    line = ["shapeworld", "render", "--split", "val", "--n", "2", "--start", "5", "--size", "64"]
    with pytest.raises(SystemExit):
        parser.parse_args(line)  # --out is required
    args = parser.parse_args([*line, "--out", str(out)])
    assert args.func(args) == 0
    assert str(out) in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "0005.png",
        "0005_label.png",
        "0005_label_color.png",
        "0006.png",
        "0006_label.png",
        "0006_label_color.png",
        "objects.json",
    ]
    sc = scene("val", 6, 64)
    assert np.array_equal(np.asarray(Image.open(out / "0006.png")), sc.image)
    assert np.array_equal(np.asarray(Image.open(out / "0006_label.png")), sc.semantic)
    meta = json.loads((out / "objects.json").read_text())
    assert meta["classes"] == list(classes("val")) and [s["index"] for s in meta["scenes"]] == [5, 6]
    entry = meta["scenes"][1]
    assert [o["name"] for o in entry["objects"]] == [o.name for o in sc.objects]
    assert [r["text"] for r in entry["referring"]] == [i.text for i in referring_items(sc)]
    assert entry["reasoning"]["queries"] and entry["vqa"]


def test_label_png_stores_ignore_as_255_and_rejects_ids_that_do_not_fit():
    label = np.array([[0, 57, IGNORE_LABEL], [254, 3, IGNORE_LABEL]])
    png = shapeworld_cli.label_png(label)
    assert png.dtype == np.uint8 and png.tolist() == [[0, 57, LABEL_PNG_IGNORE], [254, 3, LABEL_PNG_IGNORE]]
    with pytest.raises(ValueError, match=r"class ids must be 0\.\.254"):
        shapeworld_cli.label_png(np.array([[0, 255]]))
    with pytest.raises(ValueError, match=r"class ids must be 0\.\.254"):
        shapeworld_cli.label_png(np.array([[0, -2]]))


def test_holds_relation_tells_relations_from_extremes_that_name_a_side():
    items = [item for i in range(60) for item in referring_items(scene("train", i, 64))]
    sided = [it for it in items if it.query.extreme in ("left", "right") and " on the " in it.text]
    assert sided and any(it.query.relation for it in items)  # both kinds are drawn
    for item in items:
        assert holds_relation(item.text) is (item.query.relation is not None), item.text
    assert holds_relation("What is the star above the sky in this image?")
