"""`lasagna metrics`: score saved predictions against ground truth, without a model.

    lasagna metrics semseg --pred DIR --gt DIR --num-classes K [--ignore 255] [--convention correct|released]

compares label PNGs of the same relative path under both folders (subfolders included, e.g. Cityscapes cities).
PNGs are single-channel, 8- or 16-bit (palette PNGs are read as their indices). GT holds class ids 0..K-1 or the
file's ignore value, `--ignore` (default 255, LABEL_PNG_IGNORE; it must not be a class id, so with more than 255
classes pass the 16-bit file's void value, e.g. 65535); GT ignore pixels become IGNORE_LABEL once read. In a
prediction any value outside 0..K-1 means "unlabelled" (see `SemanticIoU` for how it counts).
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.records import IGNORE_LABEL, LABEL_PNG_IGNORE
from .metrics import CONVENTIONS, SemanticIoU


def read_label_png(path: Path) -> np.ndarray:
    """(H, W) int64 raw values of a single-channel (L, P, I;16 or I) PNG; void keeps the file's value."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(f"{path}: label PNGs must be single-channel 8- or 16-bit, got mode {im.mode}")
        return np.asarray(im).astype(np.int64)


def _pngs(root: Path, flag: str) -> dict[str, Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{flag} {root} is not a directory")
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.png"))}


def _check_counterparts(have: dict[str, Path], other: dict[str, Path], have_dir: Path, other_dir: Path) -> None:
    missing = sorted(have.keys() - other.keys())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} file(s) in {have_dir} have no counterpart in {other_dir}: {shown}")


def paired_pngs(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, GT) paths matched by relative path; every file must have its counterpart."""
    preds, gts = _pngs(pred_dir, "--pred"), _pngs(gt_dir, "--gt")
    if not gts:
        raise FileNotFoundError(f"--gt {gt_dir} holds no .png files")
    _check_counterparts(gts, preds, gt_dir, pred_dir)
    _check_counterparts(preds, gts, pred_dir, gt_dir)
    return [(preds[name], gts[name]) for name in gts]


def semseg_metrics(
    pred_dir: Path,
    gt_dir: Path,
    num_classes: int,
    ignore_index: int = LABEL_PNG_IGNORE,
    convention: str = "correct",
) -> dict:
    """mIoU, pixel accuracy and per-class IoU over all paired label PNGs of two folders.

    `ignore_index` is the GT files' void value; it must not be a class id (0..num_classes-1).
    """
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore value {ignore_index} is a class id (0..{num_classes - 1}); pass the GT files' void value, "
            "e.g. --ignore 65535 for 16-bit label PNGs"
        )
    metric = SemanticIoU(num_classes, convention=convention)
    pairs = paired_pngs(pred_dir, gt_dir)
    for pred_path, gt_path in tqdm(pairs, desc="semseg metrics", unit="img"):
        pred, gt = read_label_png(pred_path), read_label_png(gt_path)
        gt[gt == ignore_index] = IGNORE_LABEL
        if pred.shape != gt.shape:
            raise ValueError(f"size mismatch: {pred_path} is {pred.shape} but {gt_path} is {gt.shape} (H, W)")
        try:
            metric.update(pred, gt)
        except ValueError as e:
            raise ValueError(f"{gt_path}: {e}") from e
    result = metric.compute()
    return {
        "mIoU": result["mIoU"],
        "pixel_acc": result["pixel_acc"],
        "per_class_iou": result["per_class_iou"],
        "freq_weighted_iou": result["freq_weighted_iou"],
        "num_images": len(pairs),
        "num_pixels": result["num_pixels"],
        "convention": convention,
    }


def _run_semseg(args: argparse.Namespace) -> int:
    result = semseg_metrics(args.pred, args.gt, args.num_classes, args.ignore, args.convention)
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `metrics` with its `semseg` subcommand."""
    parser = subparsers.add_parser("metrics", help="score saved predictions against ground truth")
    kinds = parser.add_subparsers(dest="metrics_kind", metavar="KIND", required=True)
    semseg = kinds.add_parser("semseg", help="mIoU of label PNGs against GT label PNGs")
    semseg.add_argument("--pred", type=Path, required=True, help="folder of predicted label PNGs")
    semseg.add_argument("--gt", type=Path, required=True, help="folder of GT label PNGs (same relative names)")
    semseg.add_argument("--num-classes", type=int, required=True, help="K: class ids are 0..K-1")
    semseg.add_argument(
        "--ignore",
        type=int,
        default=LABEL_PNG_IGNORE,
        help=f"GT file value excluded from scoring (default {LABEL_PNG_IGNORE}); must not be a class id",
    )
    semseg.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="correct",
        help="'correct' excludes ignore pixels and counts unlabelled predictions wrong; "
        "'released' maps both to class 0 like the released code",
    )
    semseg.set_defaults(func=_run_semseg)
