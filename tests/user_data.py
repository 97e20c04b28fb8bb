"""Small datasets in the three user formats (folder, COCO JSON, JSON lines), written to a test's tmp_path.

Every photo is a flat grey field with one coloured rectangle per class it holds; the label maps, COCO polygons and
masks mark exactly those rectangles, so a model can learn the classes from the colours.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CLASSES = ["kiwi", "plum", "quince"]
COLOURS = [(40, 200, 40), (150, 30, 160), (230, 200, 30)]
SIZE = (48, 64)  # (H, W)
# per photo, the classes it holds (indices into CLASSES)
LAYOUT = [[0, 1], [1, 2], [0], [2, 0]]
BOXES = [(4, 4, 24, 28), (20, 34, 44, 60)]  # (y0, x0, y1, x1) of the first and second rectangle


def scene(classes: list[int], size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(photo (H, W, 3) uint8, label (H, W) uint8 with 255 for the background) of one photo."""
    image = np.full((*size, 3), 110, np.uint8)
    label = np.full(size, 255, np.uint8)
    for (y0, x0, y1, x1), k in zip(BOXES, classes, strict=False):
        image[y0:y1, x0:x1] = COLOURS[k]
        label[y0:y1, x0:x1] = k
    return image, label


def write_folder_tree(root: Path, layout=LAYOUT, classes=CLASSES, background: bool = False) -> Path:
    """root/images/photo<i>.png, root/labels/photo<i>.png and root/classes.txt; `background`: the uncovered pixels
    are one more class (named "ground", id len(classes)) instead of ignore."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    names = [*classes, "ground"] if background else list(classes)
    for i, held in enumerate(layout):
        image, label = scene(held)
        if background:
            label[label == 255] = len(classes)
        Image.fromarray(image).save(root / "images" / f"photo{i}.png")
        Image.fromarray(label).save(root / "labels" / f"photo{i}.png")
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    return root


def _box_polygon(box) -> list[float]:
    y0, x0, y1, x1 = box
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def write_coco_file(root: Path, layout=LAYOUT, name: str = "annotations.json") -> Path:
    """root/images/photo<i>.jpg and a COCO instances file: one polygon annotation per rectangle, the second one of
    photo 0 as RLE; category ids 11, 12, 13 (not contiguous, as in real files)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, held in enumerate(layout):
        image, _ = scene(held)
        Image.fromarray(image).save(root / "images" / f"photo{i}.jpg", quality=95)
        images.append({"id": 100 + i, "file_name": f"photo{i}.jpg", "height": SIZE[0], "width": SIZE[1]})
        for box, k in zip(BOXES, held, strict=False):
            segmentation = [_box_polygon(box)]
            if i == 0 and box == BOXES[1]:
                mask = np.zeros(SIZE, np.uint8, order="F")
                mask[box[0] : box[2], box[1] : box[3]] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            annotations.append(
                {"id": len(annotations) + 1, "image_id": 100 + i, "category_id": 11 + k, "segmentation": segmentation}
            )
    categories = [{"id": 11 + k, "name": name} for k, name in enumerate(CLASSES)]
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_jsonl_file(root: Path, layout=LAYOUT, name: str = "expressions.jsonl") -> Path:
    """root/pics/photo<i>.png and one line per class a photo holds ("the <class>", a polygon, or RLE for photo 1),
    plus one no-target line per photo (a class it does not hold)."""
    (root / "pics").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, held in enumerate(layout):
        image, _ = scene(held)
        Image.fromarray(image).save(root / "pics" / f"photo{i}.png")
        for box, k in zip(BOXES, held, strict=False):
            target: object = [_box_polygon(box)]
            if i == 1:
                mask = np.zeros(SIZE, np.uint8)
                mask[box[0] : box[2], box[1] : box[3]] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                target = {"size": rle["size"], "counts": rle["counts"].decode()}
            lines.append({"image": f"pics/photo{i}.png", "text": f"the {CLASSES[k]}", "masks": [target]})
        absent = next(k for k in range(len(CLASSES)) if k not in held)
        lines.append({"image": f"pics/photo{i}.png", "text": f"the {CLASSES[absent]}", "masks": []})
    path = root / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
