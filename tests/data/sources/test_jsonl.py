"""JSON-lines referring expressions: RLE or polygon targets, no-target lines, problems named by file and line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lasagna.data.sources import open_source
from user_data import BOXES, LAYOUT, SIZE, write_jsonl_file


def test_lines_group_into_one_record_per_photo(tmp_path):
    path = write_jsonl_file(tmp_path)
    source = open_source("jsonl", tmp_path, "train")
    assert (source.name, source.task, len(source)) == ("jsonl", "referring", len(LAYOUT))
    record = source[1]
    assert record.image_id == "pics/photo1.png" and record.load_image().shape == (*SIZE, 3)
    assert [e.text for e in record.expressions] == ["the plum", "the quince", "the kiwi"]
    y0, x0, y1, x1 = BOXES[0]
    rle_mask = record.expressions[0].load_masks()  # photo 1's targets are RLE
    assert rle_mask.shape == (1, *SIZE) and rle_mask[0, y0:y1, x0:x1].all()
    assert rle_mask.sum() == (y1 - y0) * (x1 - x0)
    polygon = source[0].expressions[0].load_masks()  # photo 0's are polygons, sized from the photo header
    assert polygon.shape == (1, *SIZE) and polygon[0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].all()
    assert record.expressions[2].load_masks().shape == (0, *SIZE)  # no target
    assert len(open_source("jsonl", path)) == len(LAYOUT)  # --root may name the file


def test_a_flat_polygon_and_a_given_size(tmp_path):
    (tmp_path / "expressions.jsonl").write_text(
        json.dumps({"image": "a.png", "text": "the box", "masks": [[1, 1, 5, 1, 5, 5, 1, 5]], "height": 8, "width": 9})
    )
    from PIL import Image

    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(tmp_path / "a.png")
    masks = open_source("jsonl", tmp_path)[0].expressions[0].load_masks()
    assert masks.shape == (1, 8, 9) and masks[0, 2:5, 2:5].all()


def test_bad_lines_and_missing_photos_are_named(tmp_path):
    path = write_jsonl_file(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = "{not json"
    lines[2] = json.dumps({"image": "pics/none.png", "text": "the kiwi"})
    lines[3] = json.dumps({"image": "pics/photo1.png", "text": "the plum", "masks": {"counts": "x"}})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        open_source("jsonl", tmp_path)
    text = str(err.value)
    assert f"{path}: line 2: not valid JSON" in text
    assert str(tmp_path / "pics" / "none.png") in text and "line 3" in text
    assert f"{path}: line 4: 'masks' must be a list" in text


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ([[]], "target 0 has no polygon"),
        ([[[10, 10, 20, 10]]], "target 0: polygon 0 has 4 values"),
        ([[[10, 10, 20, 10, 20, 20, 30]]], "target 0: polygon 0 has 7 values"),
        ([[["10", "10", "20", "10", "20", "20"]]], "target 0: polygon 0 holds '10'"),
        ([[[float("nan"), 10, 20, 10, 20, 20]]], "target 0: polygon 0 holds nan"),
        ([[[[1, 2, 3, 4, 5, 6]]]], "target 0: polygon 0 holds [1, 2, 3, 4, 5, 6]"),
    ],
)
def test_malformed_polygons_are_named_not_read_as_empty_targets(tmp_path, masks, message):
    path = write_jsonl_file(tmp_path)
    lines = path.read_text().splitlines()
    lines[0] = json.dumps({"image": "pics/photo0.png", "text": "the kiwi", "masks": masks})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        open_source("jsonl", tmp_path)
    assert f"{path}: line 1: {message}" in str(err.value)


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    path = write_jsonl_file(tmp_path)
    path.write_text("\ufeff" + path.read_text(), encoding="utf-8")
    assert len(open_source("jsonl", tmp_path)) == len(LAYOUT)
