"""Mask labels on overlays: each mask's name on its largest piece, readable, and queries named by their text."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lasagna.viz as viz
from lasagna.cli import main
from lasagna.infer import outputs
from lasagna.viz import LABEL_CHARS, label_anchors, layout_labels, overlay, overlay_scale, query_labels

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes.png"


def _two_masks() -> list[tuple[str, np.ndarray]]:
    """ "red circle" as a big square (rows 20-59, columns 10-49) plus a small stray blob; "green star" at the right."""
    red = np.zeros((96, 128), bool)
    red[20:60, 10:50] = True
    red[80:84, 100:104] = True  # the smaller piece: the label must not go there
    green = np.zeros((96, 128), bool)
    green[10:40, 80:120] = True
    return [("red circle", red), ("green star", green)]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return cols.min(), rows.min(), cols.max(), rows.max()


def test_each_name_sits_in_its_largest_piece():
    masks = _two_masks()
    anchors = label_anchors(masks)
    assert [a.name for a in anchors] == ["red circle", "green star"]
    assert anchors[0].piece_box == (10, 20, 49, 59) and anchors[0].area == 40 * 40
    assert anchors[1].piece_box == _bbox(masks[1][1])
    for anchor, (_, mask) in zip(anchors, masks, strict=True):
        x0, y0, x1, y1 = anchor.piece_box
        assert x0 <= anchor.x <= x1 and y0 <= anchor.y <= y1
        assert mask[int(anchor.y), int(anchor.x)]
    assert (anchors[0].x, anchors[0].y) == (29.5, 39)  # the square's middle


def test_labels_are_drawn_where_the_layout_says():
    image = np.full((96, 128, 3), 90, np.uint8)
    masks = _two_masks()
    plain = np.asarray(overlay(image, masks, labels=False)).astype(int)
    labelled = np.asarray(overlay(image, masks)).astype(int)
    labels = layout_labels(masks, image.shape)
    scale = overlay_scale(image.shape[0])
    assert [lab.text for lab in labels] == ["red circle", "green star"]
    for label in labels:
        x0, y0, x1, y1 = label.box
        changed = np.any(plain[y0:y1, x0:x1] != labelled[y0:y1, x0:x1], axis=-1)
        assert changed.mean() > 0.5  # the dark box covers the region
        region = labelled[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
        assert (region.max(-1) > 200).any() and (region.max(-1) < 40).mean() > 0.4  # light text on a dark box
        px0, py0, px1, py1 = (v * scale for v in label.anchor.piece_box)
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        assert px0 <= centre[0] <= px1 + scale and py0 <= centre[1] <= py1 + scale  # big pieces: label on them
    assert not np.array_equal(plain[:, : image.shape[1] * scale], labelled[:, : image.shape[1] * scale])
    boxes = [lab.box for lab in labels]
    assert not viz._overlaps(boxes[0], boxes[1])


def test_a_small_piece_keeps_its_label_beside_it():
    mask = np.zeros((64, 64), bool)
    mask[30:34, 30:34] = True
    (label,) = layout_labels([("orange cross", mask)], (64, 64, 3))
    scale = overlay_scale(64)
    piece = (30 * scale, 30 * scale, 34 * scale, 34 * scale)
    assert not viz._overlaps(label.box, piece)
    assert label.box[3] <= piece[1]  # just above it
    edge = np.zeros((64, 64), bool)
    edge[0:3, 30:34] = True
    (top,) = layout_labels([("orange cross", edge)], (64, 64, 3))
    assert top.box[1] >= 3 * scale  # no room above: below it


def test_labels_do_not_cover_each_other_and_stay_inside():
    masks = []
    for i in range(5):
        m = np.zeros((40, 40), bool)
        m[18 + (i % 2) : 22, 18:22] = True  # five masks on the same spot
        masks.append((f"class {i}", m))
    labels = layout_labels(masks, (40, 40, 3))
    size = 40 * overlay_scale(40)
    for i, a in enumerate(labels):
        assert a.box[0] >= 0 and a.box[1] >= 0 and a.box[2] <= size and a.box[3] <= size
        assert not any(viz._overlaps(a.box, b.box) for b in labels[:i])


def test_empty_masks_get_no_label_and_long_names_are_cut():
    empty = np.zeros((16, 16), bool)
    full = np.ones((16, 16), bool)
    assert label_anchors([("nothing", empty)]) == [None]
    (label,) = layout_labels([("nothing", empty), ("a very long name " * 10, full)], (16, 16, 3))
    assert len(label.text) <= LABEL_CHARS and label.text.endswith("...")


def test_query_labels():
    assert query_labels("the  red star", 1) == ["the red star"]
    assert query_labels("the red star", 2) == ["the red star #1", "the red star #2"]
    assert query_labels("the red star", 0) == []
    long = query_labels("which of these shapes would roll down a slope fastest if pushed " * 3, 3)
    assert all(len(t) <= LABEL_CHARS and "..." in t for t in long)


def test_cli_labels_query_masks_with_the_query(tmp_path, monkeypatch):
    drawn = {}
    real = viz.overlay

    def spy(image, masks, absent=(), **kwargs):
        drawn["names"] = [name for name, _ in masks]
        return real(image, masks, absent, **kwargs)

    # why both: infer/outputs.py binds `overlay` when it is first imported, which an earlier test may have done
    monkeypatch.setattr(viz, "overlay", spy)
    monkeypatch.setattr(outputs, "overlay", spy)
    query = "the orange cross"
    assert main(["segment", str(EXAMPLE), "--query", query, "--out", str(tmp_path)]) == 0
    assert drawn["names"] and all(name.startswith(query) for name in drawn["names"])
    assert (tmp_path / "overlay.png").exists()


def _bfs_largest(mask: np.ndarray) -> int:
    """Size of the largest 8-connected piece by flood fill: the reference for the run-based union-find."""
    seen = np.zeros_like(mask)
    best = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], queue, size = True, deque([start]), 0
        while queue:
            r, c = queue.popleft()
            size += 1
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    nr, nc = r + dr, c + dc
                    if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        queue.append((nr, nc))
        best = max(best, size)
    return best


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_largest_piece_matches_a_flood_fill(height, width, data):
    cells = data.draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    mask = np.array(cells, bool).reshape(height, width)
    (anchor,) = label_anchors([("x", mask)])
    if not mask.any():
        assert anchor is None
        return
    assert anchor.area == _bfs_largest(mask)
    assert mask[int(anchor.y), int(anchor.x)]
    x0, y0, x1, y1 = anchor.piece_box
    assert x0 <= anchor.x <= x1 and y0 <= anchor.y <= y1


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (50, 1)])
def test_thin_images(shape):
    mask = np.ones(shape, bool)
    picture = overlay(np.zeros((*shape, 3), np.uint8), [("sky", mask)])
    assert picture.height >= 512
