"""How good are the masks when recognition cannot fail? Present-only masks, split by what goes wrong.

    python scripts/mask_errors.py [--model DIR] [--split test] [--n 40]

Each scene is asked only for the classes it holds (as `lasagna eval --present-only`). For every present class the
script measures IoU, precision (how much of the predicted mask is that class) and recall (how much of the class
the mask covers), averaged over stuff classes and over colour-shape classes. Colour-shape classes are then split by
whether another object of the same colour is in the scene (a mask that follows colour rather than shape loses
precision there), and by their area in pixels (small objects lose most to coarse outlines).
"""

from __future__ import annotations

import argparse

import numpy as np

from lasagna.api import Lasagna
from lasagna.data.records import IGNORE_LABEL
from lasagna.shapeworld import STUFF, ShapeWorldSemantic

AREAS = ((0, 150), (150, 300), (300, 600), (600, None))


def report(title: str, rows: list[tuple[int, int, int]]) -> None:
    """rows: (ground-truth pixels, predicted pixels, overlap) per class instance."""
    gt, pred, inter = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    iou = inter / np.maximum(gt + pred - inter, 1)
    precision, recall = inter / np.maximum(pred, 1), inter / np.maximum(gt, 1)
    means = f"IoU {iou.mean():.3f}, precision {precision.mean():.3f}, recall {recall.mean():.3f}"
    print(f"{title} (n={len(rows)}): {means}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    source = ShapeWorldSemantic(args.split)
    stuff, shapes = [], []
    for i in range(args.n):
        record = source[i]
        classes, label = list(record.classes), record.load_label()
        present = [classes[k] for k in np.unique(label) if k != IGNORE_LABEL]
        colours = [name.split()[0] for name in present if name not in STUFF]
        for c in api.segment(record.load_image(), classes=present).classes:
            truth = label == classes.index(c.name)
            mask = c.mask if c.mask is not None else np.zeros_like(truth)
            row = (int(truth.sum()), int(mask.sum()), int((mask & truth).sum()))
            if c.name in STUFF:
                stuff.append(row)
            else:
                shapes.append((row, colours.count(c.name.split()[0]) > 1))
    report("stuff", stuff)
    report("colour-shape", [row for row, _ in shapes])
    report("  no other object of its colour", [row for row, shared in shapes if not shared])
    report("  another object of its colour", [row for row, shared in shapes if shared])
    for low, high in AREAS:
        rows = [row for row, _ in shapes if row[0] >= low and (high is None or row[0] < high)]
        if rows:
            report(f"  area {low}-{high or ''} px", rows)


if __name__ == "__main__":
    main()
