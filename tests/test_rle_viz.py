"""RLE round trips and validation; overlay size, legend layout and colour maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lasagna import rle
from lasagna.viz import class_color, legend_layout, overlay, semantic_colormap


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 80), (0, 5)])
@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0])
def test_rle_round_trip(shape, p):
    mask = np.random.default_rng(0).random(shape) < p
    encoded = json.loads(json.dumps(rle.encode(mask)))  # JSON-ready: survives a trip through text
    assert encoded["size"] == list(shape)
    assert isinstance(encoded["counts"], str)
    decoded = rle.decode(encoded)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)


def test_rle_decode_other_forms():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:3] = True
    counts = rle.encode(mask)["counts"]
    np.testing.assert_array_equal(rle.decode({"size": [4, 5], "counts": counts.encode()}), mask)
    # uncompressed COCO form, column-major runs: 5 zeros, 2 ones, 2 zeros, 2 ones, 9 zeros
    np.testing.assert_array_equal(rle.decode({"size": [4, 5], "counts": [5, 2, 2, 2, 9]}), mask)


def test_rle_validation():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:5] = True
    good = rle.encode(mask)
    with pytest.raises(TypeError, match="bool"):
        rle.encode(mask.astype(np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        rle.encode(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="'size' and 'counts'"):
        rle.decode({"counts": good["counts"]})
    with pytest.raises(ValueError, match="size must be"):
        rle.decode({"size": [10], "counts": good["counts"]})
    with pytest.raises(ValueError, match="cover 100 pixels but size 10x11"):
        rle.decode({"size": [10, 11], "counts": good["counts"]})
    with pytest.raises(ValueError, match="not a valid RLE character"):
        rle.decode({"size": [10, 10], "counts": good["counts"] + "~"})
    with pytest.raises(ValueError, match="cover 6 pixels"):
        rle.decode({"size": [10, 10], "counts": "6"})
    with pytest.raises(ValueError, match="negative"):
        rle.decode({"size": [2, 2], "counts": [5, -1]})


def test_class_color_is_stable_and_distinct():
    # pinned values: colours must not change between runs or versions (hash of the name, not Python's hash())
    assert class_color("cat") == (195, 230, 53)
    assert class_color("person") == (39, 207, 128)
    names = [f"class {i}" for i in range(50)]
    assert len({class_color(n) for n in names}) == 50


def test_semantic_colormap():
    label = np.array([[0, 1, 2], [255, -1, 2]])
    rgb = semantic_colormap(label, 3)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[1, :2] == 0).all()  # ignore / unlabelled are black
    assert (rgb[0, 2] == rgb[1, 2]).all()
    palette = semantic_colormap(np.arange(150)[None], 150)[0]
    assert len({tuple(c) for c in palette}) == 150
    assert not (palette == 0).all(axis=1).any()


def test_legend_layout_sections():
    entries = legend_layout(["cat", "dog", "cat"], ["car", "sky"], rows_per_column=20)
    assert [(e.kind, e.text) for e in entries] == [
        ("heading", "present (2)"),
        ("present", "cat"),
        ("present", "dog"),
        ("heading", "absent (2)"),
        ("absent", "car"),
        ("absent", "sky"),
    ]
    assert entries[3].row == 4  # a blank row separates the sections
    assert entries[1].color == class_color("cat") and entries[4].color == class_color("car")
    none = legend_layout([], ["car"], rows_per_column=20)
    assert [(e.kind, e.text) for e in none[:2]] == [("heading", "present (0)"), ("note", "(none)")]


def test_legend_layout_wraps_into_columns():
    absent = [f"class {i}" for i in range(25)] + ["x" * 80]
    entries = legend_layout(["cat", "dog"], absent, rows_per_column=10)
    assert max(e.row for e in entries) == 9
    # column 0: present heading, cat, dog, blank, absent heading, class 0-4; columns 1-2: class 5-24; column 3: x...
    assert (entries[-1].column, entries[-1].row) == (3, 0)
    cells = {(e.column, e.row) for e in entries}
    assert len(cells) == len(entries)
    absent_heading = next(e for e in entries if e.kind == "heading" and e.text.startswith("absent"))
    assert absent_heading.row < 9  # a heading never ends a column
    assert [e.text for e in entries if e.kind == "absent"][:25] == absent[:25]
    assert entries[-1].text.endswith("...") and len(entries[-1].text) == 40
    wide = legend_layout(["cat"], ["dog"], rows_per_column=2)
    assert [(e.kind, e.column, e.row) for e in wide] == [
        ("heading", 0, 0),
        ("present", 0, 1),
        ("heading", 1, 0),
        ("absent", 1, 1),
    ]


def test_overlay_size_and_pixels():
    image = np.full((128, 100, 3), 100, np.uint8)
    circle = np.zeros((128, 100), bool)
    circle[40:80, 30:70] = True
    out = overlay(image, [("red circle", circle)], absent=["car", "person"], alpha=0.5, labels=False)
    assert out.mode == "RGB"
    assert out.height == 512  # 128 px upscaled by 4
    assert out.width > 400  # picture 400 px wide plus the legend beside it
    pixels = np.asarray(out)
    color = np.array(class_color("red circle"))
    np.testing.assert_array_equal(pixels[4 * 60, 4 * 50], np.round((100 + color) / 2))  # inside, blended
    np.testing.assert_array_equal(pixels[4 * 40, 4 * 50], color)  # on the outline
    np.testing.assert_array_equal(pixels[10, 10], (100, 100, 100))  # untouched
    with pytest.raises(ValueError, match="mask 'x'"):
        overlay(image, [("x", circle[:10])])
