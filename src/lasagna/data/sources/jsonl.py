"""A user's own referring expressions as JSON lines (`--dataset jsonl --root DIR`).

The file is `DIR/<split>.jsonl` when it exists, else `DIR/expressions.jsonl`; `--root` may also name the .jsonl
file itself. One JSON object a line (blank lines are skipped):

    {"image": "images/0001.jpg", "text": "the cup left of the plate", "masks": [TARGET, ...]}

- image: the photo's path, relative to the .jsonl file's folder (or absolute);
- text: the referring expression;
- masks: one entry per target, each a COCO segmentation: an RLE object {"size": [h, w], "counts": ...} (compressed
  string or uncompressed list) or polygons [[x1, y1, x2, y2, ...], ...] (one flat [x1, y1, ...] list is read as a
  single polygon; each polygon at least 3 points of finite numbers, anything else is an error rather than an empty
  target). [] (or no "masks", or null) marks an expression that matches nothing in the photo;
- height, width (optional): the photo's size, which polygons need; read from the photo's header when absent.

Lines about one photo become one record (in file order), so its photo is read once per sample. Polygons and RLE index
the stored pixel grid, so photos are read without EXIF rotation.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lasagna.data.records import Expression, ReferRecord
from lasagna.data.sources.base import Layout, Problem, RecordSource, raise_problems
from lasagna.data.sources.imageio import read_image_size
from lasagna.data.sources.refer import decode_segmentations
from lasagna.preprocess import to_rgb

JSONL = Layout(
    "jsonl",
    "  <split>.jsonl or expressions.jsonl  (one line per expression: image, text, masks)\n"
    "  the photos, at the paths the lines give (relative to the .jsonl file's folder)",
)
DEFAULT_FILE = "expressions.jsonl"


def find_jsonl(root: str | Path | None, split: str) -> Path:
    """The expressions file: `root` itself when it is a file, else DIR/<split>.jsonl, else DIR/expressions.jsonl."""
    return JSONL.one_file(root, [f"{split}.jsonl", DEFAULT_FILE])


def _targets(value: Any) -> list[Any]:
    """The line's "masks" as a list of COCO segmentations (see the module docstring)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'masks' must be a list of targets (RLE objects or polygon lists), got {value!r:.80}")
    targets = []
    for index, target in enumerate(value):
        if isinstance(target, list) and target and all(_is_number(v) for v in target):
            target = [target]  # one flat polygon
        if isinstance(target, dict):
            if "counts" not in target or "size" not in target:
                raise ValueError(f"an RLE target needs 'size' and 'counts', got keys {sorted(target)}")
        elif not (isinstance(target, list) and all(isinstance(p, list) for p in target)):
            raise ValueError(f"a target must be an RLE object or a list of polygons, got {target!r:.80}")
        else:
            _check_polygons(target, index)
        targets.append(target)
    return targets


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_polygons(polygons: list[list], index: int) -> None:
    """Each polygon a flat list of at least 3 (x, y) points: anything else would decode to an empty or wrong mask,
    a target answered `<ins>` whose mask holds nothing."""
    if not polygons:
        raise ValueError(f"target {index} has no polygon (a target with no mask: leave it out of 'masks')")
    for k, polygon in enumerate(polygons):
        bad = [v for v in polygon if not _is_number(v)]
        if bad:
            raise ValueError(f"target {index}: polygon {k} holds {bad[0]!r:.40}; it must be numbers x1, y1, x2, ...")
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(
                f"target {index}: polygon {k} has {len(polygon)} values; it needs x, y pairs of at least 3 points"
            )


def load_target_masks(targets: tuple, image: Path, size: tuple[int, int] | None) -> np.ndarray:
    """(K, H, W) bool masks of an expression's targets, at the photo's size (`size`, else its header's)."""
    height, width = size if size is not None else read_image_size(image, exif_transpose=False)
    return decode_segmentations(list(targets), height, width)


def _size(line: dict) -> tuple[int, int] | None:
    if "height" not in line and "width" not in line:
        return None
    height, width = line.get("height"), line.get("width")
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        raise ValueError(f"'height' and 'width' must both be positive integers, got {height!r}, {width!r}")
    return height, width


def read_lines(path: Path) -> tuple[list[tuple[int, dict]], list[Problem]]:
    """(line number, object) for every non-blank line, and a problem for each line that is not a JSON object."""
    lines, problems = [], []
    with open(path, encoding="utf-8-sig") as file:  # a byte-order mark from Windows editors is not JSON
        for number, text in enumerate(file, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as err:
                problems.append(Problem(path, f"line {number}: not valid JSON ({err.msg})"))
                continue
            if not isinstance(line, dict):
                problems.append(Problem(path, f"line {number}: expected a JSON object, got {type(line).__name__}"))
                continue
            lines.append((number, line))
    return lines, problems


def _expression(line: dict, path: Path) -> tuple[Path, Expression]:
    """The line's photo path and expression; a malformed line is ValueError saying what is wrong."""
    image, text = line.get("image"), line.get("text")
    if not isinstance(image, str) or not image:
        raise ValueError("'image' must be the photo's path")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'text' must be a non-empty expression")
    image_path = (path.parent / image).resolve()
    load = partial(load_target_masks, tuple(_targets(line.get("masks"))), image_path, _size(line))
    return image_path, Expression(text=text, load_masks=load)


def scan_jsonl(root: str | Path | None = None, split: str = "train") -> tuple[RecordSource | None, list[Problem]]:
    """The source built from every well-formed line whose photo exists, and a problem for each other line."""
    path = find_jsonl(root, split)
    lines, problems = read_lines(path)
    by_image: dict[Path, list[Expression]] = {}
    for number, line in lines:
        try:
            image, expression = _expression(line, path)
        except ValueError as err:
            problems.append(Problem(path, f"line {number}: {err}"))
            continue
        if not image.is_file():
            problems.append(Problem(image, f"missing: the photo of {path.name} line {number}"))
            continue
        by_image.setdefault(image, []).append(expression)
    if not by_image:
        problems.append(Problem(path, "no usable expressions"))
        return None, problems
    records = tuple(
        ReferRecord(
            image_id=_image_id(image, path.parent),
            load_image=partial(to_rgb, image, exif_transpose=False),
            expressions=tuple(expressions),
        )
        for image, expressions in by_image.items()
    )
    return RecordSource(name="jsonl", task="referring", records=records), problems


def jsonl(root: str | Path | None = None, split: str = "train") -> RecordSource:
    """The expressions file found from `root` (see the module docstring) as a referring source named "jsonl"."""
    source, problems = scan_jsonl(root, split)
    raise_problems("jsonl", root, problems)
    assert source is not None  # no source comes with an error problem
    return source


def _image_id(image: Path, base: Path) -> str:
    """The photo's path relative to the file's folder when it is inside it, else its full path."""
    try:
        return image.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(image)
