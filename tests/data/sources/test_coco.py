"""COCO files (instances and panoptic) as a semantic source and as a referring source."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from lasagna.data.records import IGNORE_LABEL
from lasagna.data.sources import open_source
from user_data import BOXES, CLASSES, LAYOUT, SIZE, scene, write_coco_file


def _boxes_label(held, fill):
    _, raw = scene(held)
    return np.where(raw == 255, fill, raw.astype(np.int64))


def test_instances_become_label_maps_with_a_background_class(tmp_path):
    write_coco_file(tmp_path)
    source = open_source("coco", tmp_path, "train")
    assert (source.name, source.task, len(source)) == ("coco", "semantic", len(LAYOUT))
    record = source[0]
    assert record.classes == (*CLASSES, "background") and record.image_id == "photo0.jpg"
    assert record.load_image().shape == (*SIZE, 3)
    # photo 0 holds kiwi (a polygon) and plum (RLE); the rest is the background class
    assert np.array_equal(record.load_label(), _boxes_label(LAYOUT[0], len(CLASSES)))
    ignored = open_source("coco", tmp_path, background=None)
    assert ignored[0].classes == tuple(CLASSES)
    assert np.array_equal(ignored[0].load_label(), _boxes_label(LAYOUT[0], IGNORE_LABEL))


def test_the_file_is_found_by_split_or_given_itself(tmp_path):
    write_coco_file(tmp_path)
    write_coco_file(tmp_path, layout=[[2]], name="val.json")
    assert len(open_source("coco", tmp_path, "train")) == len(LAYOUT)  # no train.json: annotations.json
    assert len(open_source("coco", tmp_path, "val")) == 1
    assert len(open_source("coco", tmp_path / "val.json")) == 1
    with pytest.raises(FileNotFoundError, match=r"(?s)test\.json.*annotations\.json"):
        open_source("coco", tmp_path / "images", "test")


def test_smaller_annotations_stay_on_top(tmp_path):
    path = write_coco_file(tmp_path, layout=[[0]])
    data = json.loads(path.read_text())
    y0, x0, y1, x1 = 10, 10, 14, 14  # a small plum inside the kiwi, listed first
    small = {"id": 99, "image_id": 100, "category_id": 12, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
    data["annotations"].insert(0, small)
    path.write_text(json.dumps(data))
    label = open_source("coco", tmp_path)[0].load_label()
    assert label[12, 12] == 1 and label[6, 6] == 0


def test_referring_expressions_per_category_with_every_instance(tmp_path):
    path = write_coco_file(tmp_path, layout=[[0, 0], [1, 2]])
    source = open_source("coco-referring", path)
    assert (source.task, len(source)) == ("referring", 2)
    first, second = source[0], source[1]
    assert [e.text for e in first.expressions] == ["the kiwi"]
    masks = first.expressions[0].load_masks()
    assert masks.shape == (2, *SIZE)  # two kiwis: one multi-target expression
    y0, x0, y1, x1 = BOXES[1]
    assert masks[1, y0:y1, x0:x1].all() and masks[1].sum() == (y1 - y0) * (x1 - x0)
    assert [e.text for e in second.expressions] == ["the plum", "the quince"]


def test_problems_name_the_file(tmp_path):
    path = write_coco_file(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 77
    data["images"][1]["file_name"] = "gone.jpg"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as err:
        open_source("coco", tmp_path)
    assert "unknown category ids [77]" in str(err.value) and str(tmp_path / "images" / "gone.jpg") in str(err.value)


def _panoptic(tmp_path):
    """Photo 0 of the layout as a panoptic file: kiwi segment id 5, plum id 300 (G channel), void 0 elsewhere."""
    (tmp_path / "images").mkdir()
    (tmp_path / "panoptic_train").mkdir()
    image, raw = scene(LAYOUT[0])
    Image.fromarray(image).save(tmp_path / "images" / "photo0.png")
    ids = np.zeros(SIZE, np.int64)
    ids[raw == 0], ids[raw == 1] = 5, 300
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "panoptic_train" / "photo0.png")
    segments = [{"id": 5, "category_id": 1}, {"id": 300, "category_id": 2}]
    data = {
        "images": [{"id": 1, "file_name": "photo0.png", "height": SIZE[0], "width": SIZE[1]}],
        "annotations": [{"image_id": 1, "file_name": "photo0.png", "segments_info": segments}],
        "categories": [{"id": 1, "name": "kiwi"}, {"id": 2, "name": "plum"}, {"id": 3, "name": "sky"}],
    }
    (tmp_path / "panoptic_train.json").write_text(json.dumps(data))
    return raw


def test_panoptic_png_ids_become_classes_and_targets(tmp_path):
    raw = _panoptic(tmp_path)
    semantic = open_source("coco", tmp_path / "panoptic_train.json")
    assert semantic[0].classes == ("kiwi", "plum", "sky")  # void stays ignore: no background class
    assert np.array_equal(semantic[0].load_label(), np.where(raw == 255, IGNORE_LABEL, raw.astype(np.int64)))
    referring = open_source("coco-referring", tmp_path / "panoptic_train.json")[0]
    assert [e.text for e in referring.expressions] == ["the kiwi", "the plum"]
    assert np.array_equal(referring.expressions[1].load_masks()[0], raw == 1)


def test_a_panoptic_file_without_its_png_folder_is_named(tmp_path):
    _panoptic(tmp_path)
    for png in (tmp_path / "panoptic_train").iterdir():
        png.unlink()
    (tmp_path / "panoptic_train").rmdir()
    for name in ("coco", "coco-referring"):
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'panoptic_train'}: missing")):
            open_source(name, tmp_path / "panoptic_train.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"].append(5), "annotation #7 is not a JSON object"),
        (lambda d: d["categories"].append("fig"), "category #3 is not a JSON object"),
        (lambda d: d["images"].append("x.jpg"), "image entry 'x.jpg' lacks"),
        (lambda d: d.update(annotations={"a": 1}), "'annotations' must be a list"),
    ],
)
def test_entries_that_are_not_objects_are_named_not_a_traceback(tmp_path, edit, message):
    path = write_coco_file(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(message)):
        open_source("coco", tmp_path)


def test_string_image_ids_match_their_annotations(tmp_path):
    path = write_coco_file(tmp_path)
    data = json.loads(path.read_text())
    for entry in data["images"] + data["annotations"]:
        key = "id" if "file_name" in entry else "image_id"
        entry[key] = str(entry[key])
    path.write_text(json.dumps(data))
    source = open_source("coco", tmp_path)
    assert np.array_equal(source[0].load_label(), _boxes_label(LAYOUT[0], len(CLASSES)))


def test_a_byte_order_mark_is_not_part_of_the_json(tmp_path):
    path = write_coco_file(tmp_path)
    path.write_text("\ufeff" + path.read_text(), encoding="utf-8")
    assert len(open_source("coco", tmp_path)) == len(LAYOUT)


@pytest.mark.parametrize("background", [5, ["sky"], ""])
def test_a_background_option_that_is_not_a_name_is_named(tmp_path, background):
    write_coco_file(tmp_path)
    message = f"coco: option background must be a class name or null, got {background!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_source("coco", tmp_path, background=background)


@pytest.mark.parametrize(
    ("segment", "message"),
    [("x", "segment #2 is not an object with 'id' and 'category_id'"), ({"id": 9}, "segment #2")],
)
def test_malformed_panoptic_segments_are_named(tmp_path, segment, message):
    _panoptic(tmp_path)
    path = tmp_path / "panoptic_train.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segments_info"].append(segment)
    path.write_text(json.dumps(data))
    for name in ("coco", "coco-referring"):
        with pytest.raises(ValueError, match=re.escape(f"{path}: panoptic annotation of image 1: {message}")):
            open_source(name, path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("height", "abc", "height and width must be positive whole numbers, got 'abc', 64"),
        ("height", None, "height and width must be positive whole numbers, got None, 64"),
        ("height", 0, "height and width must be positive whole numbers, got 0, 64"),
        ("height", float("nan"), "height and width must be positive whole numbers, got nan, 64"),
        ("file_name", 5, "file_name must be a non-empty path, got 5"),
    ],
)
def test_malformed_image_entries_are_named(tmp_path, field, value, message):
    path = write_coco_file(tmp_path)
    data = json.loads(path.read_text())
    data["images"][0][field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: image entry 100: {message}")):
        open_source("coco", tmp_path)
