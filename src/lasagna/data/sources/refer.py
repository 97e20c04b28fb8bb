"""Referring segmentation: refCOCO, refCOCO+, refCOCOg, refCLEF (REFER layout) and gRefCOCO.

Expected trees under the data root:

    refer/<dataset>/refs(<split_by>).p       pickle: list of refs {ref_id, image_id, ann_id, split, sentences}
    refer/<dataset>/instances.json           COCO style: images {id, file_name, height, width},
                                             annotations {id, segmentation (polygons or RLE)}
    grefcoco/grefs(unc).json                 JSON list of refs; ann_id is a list, [-1] or no_target = no target
    grefcoco/instances.json
    coco/train2014/<file_name>               images of refcoco, refcoco+, refcocog and grefcoco
    refer/images/saiapr_tc-12/<file_name>    images of refclef

or the LISA / LaSagnA README tree (`layout="lisa"`, tried second by default; the root is their `dataset/` folder):

    refer_seg/<dataset>/refs(<split_by>).p, refer_seg/<dataset>/instances.json
    refer_seg/grefcoco/grefs(unc).json, refer_seg/grefcoco/instances.json
    refer_seg/images/mscoco/images/train2014/<file_name>   refer_seg/images/saiapr_tc-12/<file_name>

One record per image of the split; its expressions are every sentence of every ref of that image, in file order.
The text is the sentence's "sent" field (REFER's normalised, lower-cased form), else "raw". Each expression's
masks are (K, H, W) bool, one per target annotation: K = 1 for REFER refs, any K >= 0 for gRefCOCO (K = 0: the
expression matches nothing). Annotations index the stored pixel grid, so images are read without EXIF rotation.

The REFER pickles are read by `load_plain_pickle`, which builds only builtin containers and scalars and refuses
any other class, so a tampered file cannot run code.
"""

from __future__ import annotations

import builtins
import json
import pickle
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from lasagna.data.records import Expression, ReferRecord
from lasagna.data.sources.base import Layout, RecordSource
from lasagna.preprocess import to_rgb

_ALLOWED_BUILTINS = frozenset({"dict", "list", "str", "int", "float", "tuple"})
_BUILTIN_MODULES = frozenset({"builtins", "__builtin__"})  # Python 2 pickles name the module __builtin__
_NO_TARGET = -1

_DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}
_REFER_TREE = (
    "  refer/<dataset>/refs(<split_by>).p  (<split_by>: unc for refcoco, refcoco+ and refclef; umd for refcocog)\n"
    "  refer/<dataset>/instances.json\n"
    "  coco/train2014/<file_name>  (refclef: refer/images/saiapr_tc-12/<file_name>)"
)
_REFER_LISA_TREE = (
    "  refer_seg/<dataset>/refs(<split_by>).p\n  refer_seg/<dataset>/instances.json\n"
    "  refer_seg/images/mscoco/images/train2014/<file_name>  (refclef: refer_seg/images/saiapr_tc-12/<file_name>)"
)
GREFCOCO = Layout(
    "grefcoco",
    "  grefcoco/grefs(unc).json\n  grefcoco/instances.json\n  coco/train2014/<file_name>",
    "  refer_seg/grefcoco/grefs(unc).json\n  refer_seg/grefcoco/instances.json\n"
    "  refer_seg/images/mscoco/images/train2014/<file_name>",
)
_LISA_COCO_IMAGES = ("refer_seg", "images", "mscoco", "images", "train2014")


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _BUILTIN_MODULES and name in _ALLOWED_BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only plain data ({', '.join(sorted(_ALLOWED_BUILTINS))}) is allowed"
        )


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle a file that may contain only dict/list/str/int/float/tuple (and bool/None); anything else raises."""
    with open(path, "rb") as file:
        try:
            return _PlainDataUnpickler(file, encoding="utf-8").load()
        except (pickle.UnpicklingError, UnicodeDecodeError, EOFError) as err:
            raise pickle.UnpicklingError(f"{path}: {err}") from err


def _decode_one(segmentation: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]  # fewer than 3 points encloses nothing
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}: expected polygons or RLE")
    return mask_utils.decode(rle).astype(bool)


def decode_segmentations(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations (polygon lists or RLE dicts) -> (K, H, W) bool, one mask per entry; K may be 0."""
    masks = np.zeros((len(segmentations), height, width), dtype=bool)
    for k, segmentation in enumerate(segmentations):
        mask = _decode_one(segmentation, height, width)
        if mask.shape != (height, width):
            raise ValueError(
                f"an RLE mask of size {mask.shape[1]}x{mask.shape[0]} (width x height) on an image of {width}x{height}"
            )
        masks[k] = mask
    return masks


def _field(entry: dict, key: str, where: str) -> Any:
    if key not in entry:
        raise ValueError(f"{where}: missing field {key!r}")
    return entry[key]


def _target_ids(ref: dict, where: str) -> list[int]:
    """Annotation ids a ref points at; [] for a gRefCOCO no-target ref."""
    ann_ids = _field(ref, "ann_id", where)
    ann_ids = ann_ids if isinstance(ann_ids, list) else [ann_ids]
    if ref.get("no_target"):
        return []
    return [int(a) for a in ann_ids if int(a) != _NO_TARGET]


def _records(
    layout: Layout, refs: list, instances_path: Path, image_dir: Path, split: str, refs_path: Path
) -> RecordSource:
    if not isinstance(refs, list):
        raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
    available = sorted({str(ref.get("split")) for ref in refs if isinstance(ref, dict)})
    if split not in available:
        raise ValueError(f"{layout.dataset}: unknown split {split!r}; splits in {refs_path}: {', '.join(available)}")
    instances = json.loads(instances_path.read_text(encoding="utf-8"))
    images = {int(image["id"]): image for image in _field(instances, "images", str(instances_path))}
    anns = {int(ann["id"]): ann for ann in _field(instances, "annotations", str(instances_path))}

    by_image: dict[int, list[Expression]] = {}
    for index, ref in enumerate(refs):
        where = f"{refs_path} ref #{index}"
        if _field(ref, "split", where) != split:
            continue
        image_id = int(_field(ref, "image_id", where))
        if image_id not in images:
            raise ValueError(f"{where}: image {image_id} is not in {instances_path}")
        targets = _target_ids(ref, where)
        missing = [a for a in targets if a not in anns]
        if missing:
            raise ValueError(f"{where}: annotations {missing} are not in {instances_path}")
        segmentations = tuple(anns[a]["segmentation"] for a in targets)
        image = images[image_id]
        load = partial(decode_segmentations, segmentations, int(image["height"]), int(image["width"]))
        expressions = by_image.setdefault(image_id, [])
        for sentence in _field(ref, "sentences", where):
            text = sentence.get("sent") or sentence.get("raw")
            if not text:
                raise ValueError(f"{where}: a sentence has neither 'sent' nor 'raw' text")
            expressions.append(Expression(text=text, load_masks=load))

    paths = {image_id: image_dir / images[image_id]["file_name"] for image_id in by_image}
    layout.require_all(paths.values(), f"images of split {split!r}")
    records = tuple(
        ReferRecord(
            image_id=str(image_id),
            load_image=partial(to_rgb, paths[image_id], exif_transpose=False),
            expressions=tuple(expressions),
        )
        for image_id, expressions in by_image.items()
    )
    return RecordSource(name=layout.dataset, task="referring", records=records)


def refer(
    dataset: str,
    root: str | Path | None = None,
    split: str = "train",
    split_by: str | None = None,
    layout: str = "auto",
) -> RecordSource:
    """A REFER dataset ("refcoco", "refcoco+", "refcocog", "refclef") as a referring source."""
    if dataset not in _DEFAULT_SPLIT_BY:
        raise ValueError(f"unknown REFER dataset {dataset!r}; known: {', '.join(_DEFAULT_SPLIT_BY)}")
    tree = Layout(dataset, _REFER_TREE, _REFER_LISA_TREE)
    base = tree.root(root)
    split_by = split_by or _DEFAULT_SPLIT_BY[dataset]
    folders = {"official": base / "refer" / dataset, "lisa": base / "refer_seg" / dataset}
    chosen = tree.pick(layout, {name: folder / f"refs({split_by}).p" for name, folder in folders.items()})
    refs_path = folders[chosen] / f"refs({split_by}).p"
    instances_path = tree.require(folders[chosen] / "instances.json")
    if dataset == "refclef":
        image_dir = base / ("refer" if chosen == "official" else "refer_seg") / "images" / "saiapr_tc-12"
    else:
        image_dir = base / "coco" / "train2014" if chosen == "official" else base.joinpath(*_LISA_COCO_IMAGES)
    tree.require(image_dir)
    return _records(tree, load_plain_pickle(refs_path), instances_path, image_dir, split, refs_path)


def refcoco(
    root: str | Path | None = None, split: str = "train", split_by: str = "unc", layout: str = "auto"
) -> RecordSource:
    return refer("refcoco", root, split, split_by, layout)


def refcoco_plus(
    root: str | Path | None = None, split: str = "train", split_by: str = "unc", layout: str = "auto"
) -> RecordSource:
    return refer("refcoco+", root, split, split_by, layout)


def refcocog(
    root: str | Path | None = None, split: str = "train", split_by: str = "umd", layout: str = "auto"
) -> RecordSource:
    return refer("refcocog", root, split, split_by, layout)


def refclef(
    root: str | Path | None = None, split: str = "train", split_by: str = "unc", layout: str = "auto"
) -> RecordSource:
    return refer("refclef", root, split, split_by, layout)


def grefcoco(
    root: str | Path | None = None, split: str = "train", split_by: str = "unc", layout: str = "auto"
) -> RecordSource:
    """gRefCOCO: multi-target and no-target expressions (K masks per expression, K = 0 for no target)."""
    base = GREFCOCO.root(root)
    folders = {"official": base / "grefcoco", "lisa": base / "refer_seg" / "grefcoco"}
    chosen = GREFCOCO.pick(layout, {name: folder / f"grefs({split_by}).json" for name, folder in folders.items()})
    refs_path = folders[chosen] / f"grefs({split_by}).json"
    instances_path = GREFCOCO.require(folders[chosen] / "instances.json")
    images = base / "coco" / "train2014" if chosen == "official" else base.joinpath(*_LISA_COCO_IMAGES)
    image_dir = GREFCOCO.require(images)
    refs = json.loads(refs_path.read_text(encoding="utf-8"))
    return _records(GREFCOCO, refs, instances_path, image_dir, split, refs_path)
