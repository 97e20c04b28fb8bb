"""Training semantic-segmentation datasets: ADE20K, COCO-Stuff 171, Cityscapes, Mapillary Vistas v1.2.

Every reader lists the label files of a split, pairs each with its image (a missing image is an error), and maps
raw label values to contiguous class ids 0..C-1 with IGNORE_LABEL (-1, whatever the file's void value) for void; a
raw value the dataset never defines is an error when the label is loaded. Splits are named "train" and "val"
everywhere.

Expected trees under the data root (ids are file stems):

    ADEChallengeData2016/images/{training,validation}/<id>.jpg
    ADEChallengeData2016/annotations/{training,validation}/<id>.png      0 = void, 1..150 = classes
    coco/{train2017,val2017}/<id>.jpg
    coco/stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png        0..181 = COCO id - 1, 255 = void
    cityscapes/leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/<id>_gtFine_labelIds.png       labelIds; the 19 classes, others void
    mapillary_vistas/{training,validation}/images/<id>.jpg
    mapillary_vistas/{training,validation}/labels/<id>.png               0..64 = classes, 65 = unlabeled
    mapillary_vistas/config.json                                         optional: class names ("readable")

The LISA / LaSagnA README tree (`layout="lisa"`, tried second by default; the root is their `dataset/` folder):

    ade20k/images/{training,validation}/<id>.jpg, ade20k/annotations/{training,validation}/<id>.png
    cocostuff/{train2017,val2017}/<id>.png  (labels), coco/{train2017,val2017}/<id>.jpg  (images)
    mapillary/{training,validation}/v1.2/labels/<id>.png, mapillary/{training,validation}/images/<id>.jpg,
    mapillary/config_v1.2.json  (optional); LISA trained on the v2.0 labels, which this reader does not read
    cityscapes/...  as above
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lasagna.data.sources import classnames
from lasagna.data.sources.base import LabeledImage, Layout, SemanticSource, build_lut

SPLITS = ("train", "val")

ADE20K = Layout(
    "ade20k",
    "  ADEChallengeData2016/images/{training,validation}/<id>.jpg\n"
    "  ADEChallengeData2016/annotations/{training,validation}/<id>.png  (0 = void, 1..150 = classes)",
    "  ade20k/images/{training,validation}/<id>.jpg\n  ade20k/annotations/{training,validation}/<id>.png",
)
COCO_STUFF = Layout(
    "cocostuff",
    "  coco/{train2017,val2017}/<id>.jpg\n"
    "  coco/stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png  (0..181 = COCO category id - 1, 255 = void)",
    "  coco/{train2017,val2017}/<id>.jpg\n  cocostuff/{train2017,val2017}/<id>.png",
)
CITYSCAPES = Layout(
    "cityscapes",
    "  cityscapes/leftImg8bit/{train,val}/<city>/<id>_leftImg8bit.png\n"
    "  cityscapes/gtFine/{train,val}/<city>/<id>_gtFine_labelIds.png",
)
MAPILLARY = Layout(
    "mapillary",
    "  mapillary_vistas/{training,validation}/images/<id>.jpg\n"
    "  mapillary_vistas/{training,validation}/labels/<id>.png  (0..64 = classes, 65 = unlabeled)\n"
    "  mapillary_vistas/config.json  (optional, v1.2 class names)",
    "  mapillary/{training,validation}/images/<id>.jpg\n  mapillary/{training,validation}/v1.2/labels/<id>.png\n"
    "  mapillary/config_v1.2.json  (optional)",
)

_CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
_CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"
_MAPILLARY_UNLABELED = 65


def _paired(
    layout: Layout, name: str, classes: tuple[str, ...], items: list[LabeledImage], lut: np.ndarray
) -> SemanticSource:
    layout.require_all((item.image for item in items), "images for listed label files")
    return SemanticSource(name=name, classes=classes, items=tuple(items), lut=lut)


def ade20k(root: str | Path | None = None, split: str = "train", layout: str = "auto") -> SemanticSource:
    """ADE20K SceneParsing (150 classes): raw 0 -> ignore, raw k -> class k - 1."""
    folder = {"train": "training", "val": "validation"}[ADE20K.split(split, SPLITS)]
    top = ADE20K.root(root)
    bases = {"official": top / "ADEChallengeData2016", "lisa": top / "ade20k"}
    base = bases[ADE20K.pick(layout, {name: b / "annotations" / folder for name, b in bases.items()})]
    labels = ADE20K.files(base / "annotations" / folder, "*.png")
    items = [LabeledImage(p.stem, base / "images" / folder / f"{p.stem}.jpg", p) for p in labels]
    lut = build_lut(256, raw_ids=range(1, 151), ignore_ids=[0])
    return _paired(ADE20K, "ade20k", classnames.ADE20K_150, items, lut)


def cocostuff(root: str | Path | None = None, split: str = "train", layout: str = "auto") -> SemanticSource:
    """COCO-Stuff 164k with the 171 used ids made contiguous; the 11 unused raw ids and 255 are ignore."""
    folder = {"train": "train2017", "val": "val2017"}[COCO_STUFF.split(split, SPLITS)]
    top = COCO_STUFF.root(root)
    coco = top / "coco"
    label_dirs = {"official": coco / "stuffthingmaps_trainval2017" / folder, "lisa": top / "cocostuff" / folder}
    labels = COCO_STUFF.files(label_dirs[COCO_STUFF.pick(layout, label_dirs)], "*.png")
    items = [LabeledImage(p.stem, coco / folder / f"{p.stem}.jpg", p) for p in labels]
    lut = build_lut(256, classnames.COCO_STUFF_RAW_IDS, ignore_ids=[*classnames.COCO_UNUSED_RAW_IDS, 255])
    return _paired(COCO_STUFF, "cocostuff", classnames.COCO_STUFF_171, items, lut)


def cityscapes(root: str | Path | None = None, split: str = "train") -> SemanticSource:
    """Cityscapes fine annotations: the 19 training classes from labelIds, every other id ignore."""
    split = CITYSCAPES.split(split, SPLITS)
    base = CITYSCAPES.root(root) / "cityscapes"
    labels = CITYSCAPES.files(base / "gtFine" / split, f"*/*{_CITYSCAPES_LABEL_SUFFIX}")
    items = []
    for label in labels:
        image_id = label.name.removesuffix(_CITYSCAPES_LABEL_SUFFIX)
        image = base / "leftImg8bit" / split / label.parent.name / f"{image_id}{_CITYSCAPES_IMAGE_SUFFIX}"
        items.append(LabeledImage(image_id, image, label))
    names = tuple(name for name, _ in classnames.CITYSCAPES_19)
    label_ids = [label_id for _, label_id in classnames.CITYSCAPES_19]
    lut = build_lut(256, label_ids, ignore_ids=range(256))  # void by definition: every id not among the 19
    return _paired(CITYSCAPES, "cityscapes", names, items, lut)


def mapillary_classes(config: Path) -> tuple[str, ...]:
    """The 65 v1.2 class names: lower-cased "readable" entries of `config` if present, else the built-in list."""
    if not config.is_file():
        return classnames.MAPILLARY_65
    labels = json.loads(config.read_text(encoding="utf-8")).get("labels")
    if not isinstance(labels, list) or len(labels) not in (_MAPILLARY_UNLABELED, _MAPILLARY_UNLABELED + 1):
        raise ValueError(
            f"{config}: expected a Mapillary Vistas v1.2 config with 'labels' of 65 classes (+ 'unlabeled'); "
            f"got {len(labels) if isinstance(labels, list) else 'no list'}"
        )
    return tuple(entry["readable"].lower() for entry in labels[:_MAPILLARY_UNLABELED])


def mapillary(root: str | Path | None = None, split: str = "train", layout: str = "auto") -> SemanticSource:
    """Mapillary Vistas v1.2 (65 classes): raw ids 0..64 are the classes, 65 (unlabeled) is ignore."""
    folder = {"train": "training", "val": "validation"}[MAPILLARY.split(split, SPLITS)]
    top = MAPILLARY.root(root)
    official, lisa = top / "mapillary_vistas", top / "mapillary"
    trees = {  # layout -> (labels folder, images folder, config file)
        "official": (official / folder / "labels", official / folder / "images", official / "config.json"),
        "lisa": (lisa / folder / "v1.2" / "labels", lisa / folder / "images", lisa / "config_v1.2.json"),
    }
    label_dir, image_dir, config = trees[MAPILLARY.pick(layout, {name: t[0] for name, t in trees.items()})]
    labels = MAPILLARY.files(label_dir, "*.png")
    items = [LabeledImage(p.stem, image_dir / f"{p.stem}.jpg", p) for p in labels]
    lut = build_lut(256, range(_MAPILLARY_UNLABELED), ignore_ids=[_MAPILLARY_UNLABELED])
    return _paired(MAPILLARY, "mapillary", mapillary_classes(config), items, lut)
