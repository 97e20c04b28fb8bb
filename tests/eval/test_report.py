"""Per-class IoU rows from the confusion matrix, the printed table, and the chart PNG."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lasagna.eval.metrics import SemanticIoU
from lasagna.eval.report import format_table, per_class_rows, save_iou_chart


def _metric() -> SemanticIoU:
    metric = SemanticIoU(4)
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, -1]])
    pred = np.array([[0, 0, 1, 0], [-1, 0, 2, 2]])
    metric.update(pred, gt)
    return metric


def test_rows_carry_iou_and_pixel_counts():
    rows = per_class_rows(_metric(), ["sky", "sea", "sun", "moon"])
    # class 0: 3 of 4 GT pixels right, 1 wrong prediction from class 1 -> 3 / 5; class 1: 1 / 3;
    # class 2: predicted once on a class-1 pixel, never in GT -> 0; class 3: nowhere -> undefined
    assert [r["name"] for r in rows] == ["sky", "sea", "sun", "moon"]
    assert [r["iou"] for r in rows] == pytest.approx([3 / 5, 1 / 3, 0.0, None])
    assert [r["gt_pixels"] for r in rows] == [4, 3, 0, 0]  # the ignore pixel is not counted
    assert [r["pred_pixels"] for r in rows] == [4, 1, 1, 0]  # the unlabelled prediction belongs to no class
    assert [r["name"] for r in per_class_rows(_metric())] == ["class 0", "class 1", "class 2", "class 3"]
    with pytest.raises(ValueError, match="3 class names given for 4 classes"):
        per_class_rows(_metric(), ["a", "b", "c"])


def test_table_lists_best_first_and_undefined_last():
    lines = format_table(per_class_rows(_metric(), ["sky", "sea", "sun", "moon"])).splitlines()
    assert lines[0].split() == ["class", "IoU", "GT", "px", "pred", "px"]
    assert [line.split()[0] for line in lines[1:]] == ["sky", "sea", "sun", "moon"]
    assert lines[1].split()[1] == "60.0" and lines[-1].split()[1] == "-"


def test_chart_is_written_atomically_and_grows_with_the_class_count(tmp_path):
    few = save_iou_chart(tmp_path / "few.png", per_class_rows(_metric(), ["sky", "sea", "sun", "moon"]))
    rows = [
        {"id": i, "name": f"a rather long class name number {i}", "iou": i / 150, "gt_pixels": 1, "pred_pixels": 1}
        for i in range(150)
    ]
    many = save_iou_chart(tmp_path / "many.png", rows, "150 classes")
    with Image.open(few) as a, Image.open(many) as b:
        assert a.format == b.format == "PNG"
        assert b.height > 8 * a.height  # about 17 px per class, so 150 names do not overlap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.png", "many.png"]  # no temporary left behind
    with pytest.raises(ValueError, match="nothing to chart"):
        save_iou_chart(tmp_path / "none.png", [dict(rows[0], iou=None)])
