"""A user's own data as a COCO JSON file, instances or panoptic (`--dataset coco|coco-referring --root DIR`).

Where things are (DIR is `--root`, or the folder of `--root FILE.json`):

    DIR/<split>.json, else DIR/annotations.json      the COCO file (`--root` may name the file itself)
    DIR/images/<file_name>, else DIR/<file_name>     the photos, by each image entry's file_name
    DIR/<json name without .json>/<file_name>, else DIR/panoptic/<file_name>
                                                     panoptic only: the segment-id PNGs, by each annotation's
                                                     file_name (COCO's own naming: panoptic_val2017.json beside
                                                     panoptic_val2017/)

The file is instances-style when its annotations carry "segmentation" (polygons or RLE, decoded with pycocotools)
and panoptic when they carry "segments_info" (a PNG whose pixel id is R + 256 G + 256^2 B).

Two sources read it:

- "coco" (semantic): the categories, in file order, are the class list. A pixel takes the category of the
  annotation covering it (the smallest one where they overlap). Pixels no annotation covers are void (ignore) in a
  panoptic file, where id 0 means unlabelled; in an instances file, whose annotations leave the background out,
  they form one more class named `background` ("background" by default; a category of that name is reused; None
  makes them ignore, which leaves them out of the mask losses too, so masks learn nothing about where objects end).
- "coco-referring": per photo, one expression "the <category>" per category it holds, whose targets are all of that
  category's annotations (several instances: a multi-target expression).

Photos are read without EXIF rotation: COCO polygons and PNGs index the stored pixel grid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lasagna.data.records import IGNORE_LABEL, Expression, ReferRecord, SemanticRecord
from lasagna.data.sources.base import Layout, Problem, RecordSource, class_name_problems, raise_problems
from lasagna.data.sources.refer import decode_segmentations
from lasagna.preprocess import to_rgb

COCO = Layout(
    "coco",
    "  <split>.json or annotations.json  (COCO instances or panoptic)\n"
    "  images/<file_name> or <file_name>  (the photos)\n"
    "  <json name>/<file_name> or panoptic/<file_name>  (panoptic PNGs)",
)
DEFAULT_FILE = "annotations.json"
BACKGROUND = "background"


def find_coco_json(root: str | Path | None, split: str) -> Path:
    """The COCO file: `root` itself when it is a file, else DIR/<split>.json, else DIR/annotations.json."""
    return COCO.one_file(root, [f"{split}.json", DEFAULT_FILE])


@dataclass
class CocoFile:
    """A COCO file read and checked: classes, photos (id -> entry with its path) and annotations per photo."""

    path: Path
    panoptic: bool
    classes: list[str]
    class_of: dict[int, int]  # category id -> class index
    images: dict[int, dict] = field(default_factory=dict)
    paths: dict[int, Path] = field(default_factory=dict)
    anns: dict[int, list[dict]] = field(default_factory=dict)
    png_dir: Path | None = None
    problems: list[Problem] = field(default_factory=list)
    bad_classes: bool = False  # no categories, or ids that cannot index them: no source can be built
    skipped: set[int] = field(default_factory=set)  # ids of image entries already reported unusable

    @property
    def readable(self) -> bool:
        """Whether records can be built at all: categories with usable ids, photos, and a PNG folder if panoptic."""
        return not self.bad_classes and bool(self.images) and not (self.panoptic and self.png_dir is None)


def _png_dir(path: Path) -> Path | None:
    for folder in (path.parent / path.stem, path.parent / "panoptic"):
        if folder.is_dir():
            return folder
    return None


def read_coco(root: str | Path | None = None, split: str = "train") -> CocoFile:
    """Read the COCO file found from `root` and collect a problem for every entry that cannot be used."""
    path = find_coco_json(root, split)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark from Windows editors
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ValueError(f"{path}: a COCO file needs 'images' and 'categories' lists")
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise ValueError(f"{path}: 'annotations' must be a list, got {type(annotations).__name__}")
    categories = data["categories"]
    for index, category in enumerate(categories):
        if not isinstance(category, dict):  # why raise: the class list's order cannot be trusted past it
            raise ValueError(f"{path}: category #{index} is not a JSON object: {category!r:.80}")
    coco = CocoFile(
        path=path,
        panoptic=any(isinstance(a, dict) and "segments_info" in a for a in annotations),
        classes=[str(c.get("name", "")) for c in categories],
        class_of={_id(c["id"]): i for i, c in enumerate(categories) if "id" in c},
    )
    coco.problems += class_name_problems(coco.classes, path)
    if len(coco.class_of) != len(categories):
        coco.problems.append(Problem(path, "every category needs a unique 'id'"))
    coco.bad_classes = len(coco.class_of) != len(categories) or not categories
    if not categories:
        coco.problems.append(Problem(path, "no categories"))
    photo_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    for entry in data["images"]:
        if not isinstance(entry, dict) or not all(k in entry for k in ("id", "file_name", "height", "width")):
            coco.problems.append(Problem(path, f"image entry {entry!r:.80} lacks id, file_name, height or width"))
            continue
        wrong = _image_entry_problem(entry)
        if wrong:
            coco.problems.append(Problem(path, f"image entry {entry['id']!r}: {wrong}"))
            coco.skipped.add(_id(entry["id"]))
            continue
        photo = photo_dir / entry["file_name"]
        if not photo.is_file():
            coco.problems.append(Problem(photo, f"missing: the photo of image id {entry['id']}"))
            coco.skipped.add(_id(entry["id"]))
            continue
        image_id = _id(entry["id"])
        coco.images[image_id], coco.paths[image_id], coco.anns[image_id] = entry, photo, []
    if not coco.images:
        coco.problems.append(Problem(path, "no usable image entries"))
    if coco.panoptic:
        coco.png_dir = _png_dir(path)
        if coco.png_dir is None:
            coco.problems.append(Problem(path.parent / path.stem, "missing: the folder of the panoptic PNGs"))
    for index, ann in enumerate(annotations):
        if isinstance(ann, dict):
            _add_annotation(coco, ann)
        else:
            coco.problems.append(Problem(path, f"annotation #{index} is not a JSON object: {ann!r:.80}"))
    return coco


def _image_entry_problem(entry: dict) -> str:
    """What is wrong with an image entry's file_name, height or width ("" if nothing): masks are painted at that
    size, so a size that is not a positive whole number cannot be used."""
    if not isinstance(entry["file_name"], str) or not entry["file_name"]:
        return f"file_name must be a non-empty path, got {entry['file_name']!r}"
    height, width = entry["height"], entry["width"]
    if not all(_whole(v) for v in (height, width)):
        return f"height and width must be positive whole numbers, got {height!r}, {width!r}"
    return ""


def _whole(value: Any) -> bool:
    """A positive whole number: 48, or 48.0 as some exporters write it (never True, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 1 and value == int(value)


def _id(value: Any) -> Any:
    """An image or category id as a lookup key: a whole-number string ("100") and the number (100) are one id,
    since COCO exporters write either."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, str | int | float | None) else repr(value)  # a list or object: named as is


def _is_segment(segment: Any) -> bool:
    """A panoptic segments_info entry the readers can use: its PNG id (a number) and its category."""
    return (
        isinstance(segment, dict)
        and isinstance(segment.get("id"), int)
        and not isinstance(segment.get("id"), bool)
        and "category_id" in segment
    )


def _add_annotation(coco: CocoFile, ann: dict) -> None:
    image_id = _id(ann.get("image_id"))
    if image_id not in coco.anns:
        if image_id not in coco.skipped:
            coco.problems.append(Problem(coco.path, f"annotation of image id {image_id!r}, which no image entry has"))
        return
    if coco.panoptic:
        segments = ann.get("segments_info")
        if not isinstance(segments, list) or "file_name" not in ann:
            coco.problems.append(Problem(coco.path, f"panoptic annotation of image {image_id} lacks segments_info"))
            return
        if coco.png_dir is not None and not (coco.png_dir / ann["file_name"]).is_file():
            coco.problems.append(Problem(coco.png_dir / ann["file_name"], f"missing: the PNG of image {image_id}"))
            return
        bad = next((k for k, seg in enumerate(segments) if not _is_segment(seg)), None)
        if bad is not None:
            coco.problems.append(
                Problem(
                    coco.path,
                    f"panoptic annotation of image {image_id}: segment #{bad} is not an object with 'id' and "
                    f"'category_id': {segments[bad]!r:.80}",
                )
            )
            return
        unknown = [s["category_id"] for s in segments if s["category_id"] not in coco.class_of]
    else:
        if "segmentation" not in ann:
            coco.problems.append(Problem(coco.path, f"annotation {ann.get('id')!r} lacks 'segmentation'"))
            return
        ann = {**ann, "category_id": _id(ann.get("category_id"))}
        unknown = [] if ann["category_id"] in coco.class_of else [ann["category_id"]]
    if unknown:
        coco.problems.append(Problem(coco.path, f"annotation of image {image_id} has unknown category ids {unknown}"))
        return
    coco.anns[image_id].append(ann)


def paint_instances(pieces: tuple[tuple[int, Any], ...], height: int, width: int, fill: int) -> np.ndarray:
    """(H, W) int64 label map: each (class index, segmentation) painted largest first, so a smaller annotation stays
    on top where they overlap; uncovered pixels hold `fill`."""
    label = np.full((height, width), fill, dtype=np.int64)
    if not pieces:
        return label
    masks = decode_segmentations([seg for _, seg in pieces], height, width)
    for k in np.argsort(-masks.reshape(len(masks), -1).sum(1), kind="stable"):
        label[masks[k]] = pieces[k][0]
    return label


def read_segment_ids(png: Path) -> np.ndarray:
    """(H, W) int64 segment ids of a COCO panoptic PNG (R + 256 G + 256^2 B)."""
    rgb = to_rgb(png, exif_transpose=False).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def paint_panoptic(png: Path, segments: tuple[tuple[int, int], ...]) -> np.ndarray:
    """(H, W) int64 label map of a panoptic PNG: each (segment id, class index); other ids (0 = void) ignore."""
    ids = read_segment_ids(png)
    label = np.full(ids.shape, IGNORE_LABEL, dtype=np.int64)
    for segment_id, class_index in segments:
        label[ids == segment_id] = class_index
    return label


def panoptic_masks(png: Path, segment_ids: tuple[int, ...]) -> np.ndarray:
    """(K, H, W) bool: one mask per listed segment id of a panoptic PNG."""
    ids = read_segment_ids(png)
    return ids[None] == np.asarray(segment_ids, dtype=np.int64).reshape(-1, 1, 1)


def _semantic_record(coco: CocoFile, image_id: int, classes: tuple[str, ...], background: int | None) -> SemanticRecord:
    entry, anns = coco.images[image_id], coco.anns[image_id]
    if coco.panoptic:
        png = coco.png_dir / anns[0]["file_name"] if anns else None
        segments = tuple((int(s["id"]), coco.class_of[s["category_id"]]) for a in anns for s in a["segments_info"])
        size = (int(entry["height"]), int(entry["width"]))
        load = partial(paint_panoptic, png, segments) if png else partial(np.full, size, IGNORE_LABEL, np.int64)
    else:
        pieces = tuple((coco.class_of[a["category_id"]], a["segmentation"]) for a in anns)
        fill = IGNORE_LABEL if background is None else background
        load = partial(paint_instances, pieces, int(entry["height"]), int(entry["width"]), fill)
    photo = partial(to_rgb, coco.paths[image_id], exif_transpose=False)
    return SemanticRecord(image_id=str(entry["file_name"]), load_image=photo, load_label=load, classes=classes)


def scan_coco(
    root: str | Path | None = None, split: str = "train", background: str | None = BACKGROUND
) -> tuple[RecordSource | None, list[Problem]]:
    """The semantic source of every usable photo (None when the class list is wrong) and the problems found."""
    if background is not None and not (isinstance(background, str) and background.strip()):
        raise ValueError(f"coco: option background must be a class name or null, got {background!r}")
    coco = read_coco(root, split)
    if not coco.readable:
        return None, coco.problems
    classes = list(coco.classes)
    background_index = None
    if background is not None and not coco.panoptic:
        lowered = [c.lower() for c in classes]
        if background.lower() not in lowered:
            classes.append(background)
        background_index = [c.lower() for c in classes].index(background.lower())
    names = tuple(classes)
    records = tuple(_semantic_record(coco, i, names, background_index) for i in coco.images)
    return RecordSource(name="coco", task="semantic", records=records), coco.problems


def scan_coco_referring(
    root: str | Path | None = None, split: str = "train"
) -> tuple[RecordSource | None, list[Problem]]:
    """The referring source ("the <category>" per category a photo holds) and the problems found."""
    coco = read_coco(root, split)
    if not coco.readable:
        return None, coco.problems
    records = []
    for image_id, entry in coco.images.items():
        by_class: dict[int, list[dict]] = {}
        for ann in coco.anns[image_id]:
            parts = ann["segments_info"] if coco.panoptic else [ann]
            for part in parts:
                by_class.setdefault(coco.class_of[part["category_id"]], []).append(part)
        expressions = []
        for class_index, parts in sorted(by_class.items()):
            if coco.panoptic:
                png = coco.png_dir / coco.anns[image_id][0]["file_name"]
                load = partial(panoptic_masks, png, tuple(int(p["id"]) for p in parts))
            else:
                segmentations = tuple(p["segmentation"] for p in parts)
                load = partial(decode_segmentations, segmentations, int(entry["height"]), int(entry["width"]))
            expressions.append(Expression(text=f"the {coco.classes[class_index]}", load_masks=load))
        if expressions:
            photo = partial(to_rgb, coco.paths[image_id], exif_transpose=False)
            records.append(ReferRecord(str(entry["file_name"]), photo, tuple(expressions)))
    if not records:
        coco.problems.append(Problem(coco.path, "no photo with an annotation"))
        return None, coco.problems
    return RecordSource(name="coco-referring", task="referring", records=tuple(records)), coco.problems


def coco(root: str | Path | None = None, split: str = "train", background: str | None = BACKGROUND) -> RecordSource:
    """A COCO instances or panoptic file as a semantic source (see the module docstring)."""
    source, problems = scan_coco(root, split, background)
    raise_problems("coco", root, problems)
    assert source is not None  # no source comes with an error problem
    return source


def coco_referring(root: str | Path | None = None, split: str = "train") -> RecordSource:
    """A COCO instances or panoptic file as a referring source (see the module docstring)."""
    source, problems = scan_coco_referring(root, split)
    raise_problems("coco-referring", root, problems)
    assert source is not None  # no source comes with an error problem
    return source
