"""ReasonSeg: reasoning segmentation from labelme-style JSON polygons.

Expected tree under the data root:

    reason_seg/ReasonSeg/{train,val,test}/<id>.jpg
    reason_seg/ReasonSeg/{train,val,test}/<id>.json   {"text": [queries] or "query", "is_sentence": bool,
                                                        "shapes": [{"label": str, "points": [[x, y], ...]}]}
    reason_seg/ReasonSeg/explanatory/train.json       optional: [{"image": "<id>.jpg", "outputs": explanation}]

The original JSON files are read directly (no `*_new.json` preprocessing step, spec 3.4). The mask is painted the
way the benchmark's reference does, so that scores stay comparable: shapes labelled "flag" are dropped (deprecated
annotations); points are truncated to integer pixels; every polygon is filled with its 1-pixel outline; polygons
are painted largest pixel area first (ties: later shape first), ignore when the label contains "ignore" (255 on
the 8-bit canvas, IGNORE_LABEL in the returned int64 mask), 1 (target) otherwise. Polygons are in the upright
frame (labelme applies EXIF orientation), so images are read with EXIF orientation applied and the mask has the
same (H, W).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lasagna.data.records import IGNORE_LABEL, ReasonRecord
from lasagna.data.sources.base import Layout, RecordSource
from lasagna.data.sources.imageio import read_image_size
from lasagna.preprocess import to_rgb

REASONSEG = Layout(
    "reasonseg",
    "  reason_seg/ReasonSeg/{train,val,test}/<id>.jpg\n"
    "  reason_seg/ReasonSeg/{train,val,test}/<id>.json  (text, is_sentence, shapes)\n"
    "  reason_seg/ReasonSeg/explanatory/train.json  (optional explanations)",
)
TARGET = 1
_CANVAS_IGNORE = 255  # the 8-bit drawing canvas cannot hold IGNORE_LABEL; mapped to it once painting is done


@dataclass(frozen=True)
class Shape:
    """One annotated polygon: integer (x, y) pixel points and the value it paints (TARGET or IGNORE_LABEL)."""

    value: int
    points: tuple[tuple[int, int], ...]


def _paint(canvas: Image.Image, shape: Shape, value: int) -> None:
    draw = ImageDraw.Draw(canvas)
    if len(shape.points) == 1:
        draw.point(shape.points, fill=value)
    else:
        draw.polygon(shape.points, fill=value, outline=value)


def _area(shape: Shape, height: int, width: int) -> int:
    """Pixels the shape paints inside the image, counted on a canvas cropped to its bounding box."""
    xs, ys = zip(*shape.points, strict=True)
    x0, y0, x1, y1 = max(min(xs), 0), max(min(ys), 0), min(max(xs), width - 1), min(max(ys), height - 1)
    if x1 < x0 or y1 < y0:
        return 0
    crop = Image.new("L", (x1 - x0 + 1, y1 - y0 + 1), 0)
    _paint(crop, Shape(TARGET, tuple((x - x0, y - y0) for x, y in shape.points)), 1)
    return int(np.asarray(crop).sum())


def draw_reason_mask(shapes: tuple[Shape, ...], image_path: str | Path) -> np.ndarray:
    """(H, W) int64 mask at the upright size of `image_path`: 0 background, 1 target, IGNORE_LABEL ignore."""
    height, width = read_image_size(image_path)
    areas = [_area(shape, height, width) for shape in shapes]
    canvas = Image.new("L", (width, height), 0)
    for index in np.argsort(areas, kind="stable")[::-1]:
        value = shapes[index].value
        _paint(canvas, shapes[index], _CANVAS_IGNORE if value == IGNORE_LABEL else value)
    painted = np.asarray(canvas)
    return np.where(painted == _CANVAS_IGNORE, IGNORE_LABEL, painted.astype(np.int64))


def _read_json(path: Path):
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return json.loads(raw.decode("cp1252"))  # a few annotation files were saved from Windows tools


def _shapes(annotation: dict, path: Path) -> tuple[Shape, ...]:
    shapes = []
    for entry in annotation.get("shapes", []):
        label = str(entry.get("label", ""))
        if label.lower() == "flag":
            continue
        points = tuple((int(x), int(y)) for x, y in entry.get("points") or ())
        if not points:
            raise ValueError(f"{path}: shape {label!r} has no points")
        shapes.append(Shape(IGNORE_LABEL if "ignore" in label.lower() else TARGET, points))
    return tuple(shapes)


def _explanations(folder: Path) -> dict[str, str]:
    path = folder / "explanatory" / "train.json"
    if not path.is_file():
        return {}
    return {Path(entry["image"]).stem: entry["outputs"] for entry in _read_json(path)}


def reasonseg(root: str | Path | None = None, split: str = "train") -> RecordSource:
    """ReasonSeg images with all their queries (one record per image); explanations attached for train."""
    split = REASONSEG.split(split, ("train", "val", "test"))
    folder = REASONSEG.root(root) / "reason_seg" / "ReasonSeg"
    images = REASONSEG.files(folder / split, "*.jpg")
    REASONSEG.require_all((p.with_suffix(".json") for p in images), "annotation files (<id>.json beside <id>.jpg)")
    explanations = _explanations(folder) if split == "train" else {}
    records = []
    for image in images:
        annotation_path = image.with_suffix(".json")
        annotation = _read_json(annotation_path)
        text = annotation.get("text")
        queries = (text,) if isinstance(text, str) else tuple(text or ())
        if not queries:
            raise ValueError(f"{annotation_path}: no query text")
        records.append(
            ReasonRecord(
                image_id=image.stem,
                load_image=partial(to_rgb, image),
                queries=queries,
                is_sentence=bool(annotation.get("is_sentence", False)),
                load_mask=partial(draw_reason_mask, _shapes(annotation, annotation_path), image),
                explanation=explanations.get(image.stem),
            )
        )
    return RecordSource(name="reasonseg", task="reasoning", records=tuple(records))
