"""What `lasagna segment` (and `lasagna eval --save-preds`) write per image: result.json, overlay.png, label.png.

An image's files live in a folder of their own and are swapped in together (`write_outputs`), so a run killed at any
moment leaves either an image's complete earlier output or none. label.png is the semantic map of a class-list answer:
each pixel holds the index of its class in the queried list, LABEL_VOID where no class covers it; with more than 255
classes it is a 16-bit PNG whose void is LABEL_VOID_16. `lasagna metrics semseg` reads these folders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .. import rle, viz
from ..atomic import write_atomic_dir

if TYPE_CHECKING:  # the engine (torch, transformers) is not needed to write a prediction out
    from .prediction import Prediction

LABEL_VOID = 255
"""Unlabelled pixels in an 8-bit label.png (the class list then has at most 255 names)."""
LABEL_VOID_16 = 65535
"""Unlabelled pixels in a 16-bit label.png (class lists of 256 names or more)."""

OUTPUT_FILES = frozenset({"result.json", "overlay.png", "label.png"})
"""What an image's output folder holds; it is replaced whole, so only these may be there."""


def result_json(pred: Prediction, image_path: str) -> dict:
    """The JSON of one answer: per class its name, decision, score, area and COCO RLE mask; the answer text."""
    classes = [
        {
            "name": c.name,
            "present": c.present,
            "score": round(c.score, 4),
            "area": int(c.mask.sum()) if c.mask is not None else 0,
            "answered": c.answered,
            "llm_present": c.llm_present,
            "mask": rle.encode(c.mask) if c.mask is not None else None,
        }
        for c in pred.classes
    ]
    return {
        "image": image_path,
        "image_size": list(pred.image_size),
        "classes": classes,
        "masks": [rle.encode(m) for m in pred.masks],
        "answer": pred.text,
        "unmatched_names": pred.unmatched,
        "warnings": pred.warnings,
    }


def label_image(pred: Prediction, classes: Sequence[str] | None = None, by_score: bool = True) -> Image.Image:
    """The semantic map of a class-list answer as a PNG-ready image: a palette image ("P", the colours of
    `viz.semantic_colormap`) indexed by `classes` (default: the queried list), or 16-bit ("I;16") past 255 names.
    `by_score` is how overlapping masks merge (`Prediction.semantic_map`)."""
    classes = list(classes or [c.name for c in pred.classes])
    return label_png(pred.semantic_map(classes, by_score=by_score), len(classes))


def label_png(label: np.ndarray, num_classes: int) -> Image.Image:
    """(H, W) class indices (negative: unlabelled) encoded as label.png: an 8-bit palette image with void
    LABEL_VOID, or 16-bit with void LABEL_VOID_16 past 255 classes (eval writes GT maps the same way)."""
    label = np.asarray(label)
    if num_classes <= LABEL_VOID:
        picture = Image.fromarray(np.where(label < 0, LABEL_VOID, label).astype(np.uint8), mode="P")
        palette = np.zeros((256, 3), np.uint8)
        palette[:num_classes] = viz.semantic_palette(num_classes)
        picture.putpalette(palette.reshape(-1).tolist())
        return picture
    # No mode= here: Pillow 13 refuses mode="I;16" for a uint16 array it would itself read as "I;16".
    return Image.fromarray(np.where(label < 0, LABEL_VOID_16, label).astype(np.uint16))


def check_output_folder(out: Path) -> None:
    """Refuse an `out` that is a file or holds files lasagna did not write (the swap would remove them)."""
    if out.exists():
        if not out.is_dir():
            raise NotADirectoryError(f"--out {out} is a file, not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:
            raise FileExistsError(
                f"--out {out} holds files lasagna did not write ({', '.join(foreign[:3])}); name a new or empty folder"
            )


def write_outputs(out: Path, fill) -> Path:
    """Write an image's output files with `fill(folder)` and swap them into `out` together (a kill never leaves a
    new result beside an old overlay). `out` must be new, empty, or an earlier output folder: never a folder of
    the user's, whose other files the swap would remove."""
    check_output_folder(out)
    return write_atomic_dir(out, fill, overwrite=True)


def write_image_outputs(
    out: Path,
    image: np.ndarray,
    pred: Prediction,
    image_path: str,
    query: str | None = None,
    with_overlay: bool = True,
    classes: Sequence[str] | None = None,
    by_score: bool = True,
    settings: dict | None = None,
) -> Path:
    """One image's folder: result.json (with the query, if any, and a run's `settings`, if given), overlay.png
    (unless `with_overlay` is False) and, for a class list, label.png indexed by `classes` (default: the queried
    list; eval passes the dataset's full list) and merged as `by_score` says; all appear at once."""
    data = result_json(pred, image_path)
    if query is not None:
        data = {"query": query, **data}
    if settings is not None:
        data["settings"] = settings
    text = json.dumps(data, indent=1) + "\n"
    picture = label = None
    if query is not None:
        masks = list(zip(viz.query_labels(query, len(pred.masks)), pred.masks, strict=True))
        absent = [] if masks else ["(no target)"]
    else:
        masks = [(c.name, c.mask) for c in pred.classes if c.present]
        absent = pred.absent
        label = label_image(pred, classes, by_score)
    if with_overlay:
        picture = viz.overlay(image, masks, absent)

    def fill(folder: Path) -> None:
        (folder / "result.json").write_text(text)
        if picture is not None:
            picture.save(folder / "overlay.png", format="PNG")
        if label is not None:
            label.save(folder / "label.png", format="PNG")

    return write_outputs(Path(out), fill)
