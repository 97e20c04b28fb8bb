"""`lasagna metrics`: score saved predictions against ground truth, without a model.

    lasagna metrics semseg --pred DIR --gt DIR [--num-classes K] [--ignore V] [--convention correct|released]
                           [--chart PATH]

`--pred` is either
- an output folder of `lasagna segment --out DIR` or of `lasagna eval --save-preds` (it holds run.json or
  `<rel>/result.json` files): each `<rel>/label.png` pairs with the GT's `<rel>.png`, the class names come from
  run.json (then `--num-classes` may be left out; a different count is an error), and a label value that is neither
  a class index nor the void (255, or 65535 past 255 classes) is an error; or
- a flat folder of label PNGs: each pairs with the GT PNG of the same relative path (subfolders included, e.g.
  Cityscapes cities), `--num-classes` is needed, and any value outside 0..K-1 means "unlabelled".
PNGs are single-channel, 8- or 16-bit (palette PNGs are read as their indices). GT holds class ids 0..K-1 or the
file's ignore value `--ignore` (default: 255, or 65535 past 255 classes, as label.png and eval's saved GT encode
void; it must not be a class id); GT ignore pixels become IGNORE_LABEL once read (see `SemanticIoU` for how
unlabelled predictions count). Prints one JSON object on stdout (with a per-class table), the table as text on
stderr, and with `--chart` a bar chart of per-class IoU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..data.records import IGNORE_LABEL
from .metrics import CONVENTIONS, SemanticIoU
from .preds import void_value
from .report import format_table, per_class_rows, save_iou_chart


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


def read_run(pred_dir: Path) -> dict | None:
    """The run.json of a segment / eval output folder, None when there is none."""
    path = pred_dir / "run.json"
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(run, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(run).__name__}")
    return run


def is_output_folder(pred_dir: Path) -> bool:
    """Whether `pred_dir` is a segment / eval output folder (run.json, or per-image result.json files)."""
    return (pred_dir / "run.json").is_file() or next(pred_dir.rglob("result.json"), None) is not None


def output_label_pngs(pred_dir: Path) -> dict[str, Path]:
    """`<rel>` -> `<rel>/label.png` of every image folder (one holding result.json) of an output folder."""
    labels = {}
    for result in sorted(pred_dir.rglob("result.json")):
        if result.parent == pred_dir:
            raise ValueError(
                f"--pred {pred_dir} is one image's output folder; pass the folder above it, or its label.png "
                "in a folder of its own"
            )
        if (result.parent / "label.png").is_file():
            labels[result.parent.relative_to(pred_dir).as_posix()] = result.parent / "label.png"
    if not labels:
        raise FileNotFoundError(
            f"--pred {pred_dir} holds no <image>/label.png: label maps are written for class lists only, "
            "not for --query runs or referring / reasoning answers"
        )
    return labels


def paired_pngs(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """(prediction, GT) paths matched by relative path; every file must have its counterpart. In an output folder
    (`is_output_folder`) the prediction of `<rel>.png` is `<rel>/label.png`."""
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"--pred {pred_dir} is not a directory")
    if is_output_folder(pred_dir):
        preds = {f"{rel}.png": path for rel, path in output_label_pngs(pred_dir).items()}
    else:
        preds = _pngs(pred_dir, "--pred")
    gts = _pngs(gt_dir, "--gt")
    if not gts:
        raise FileNotFoundError(f"--gt {gt_dir} holds no .png files")
    _check_counterparts(gts, preds, gt_dir, pred_dir)
    _check_counterparts(preds, gts, pred_dir, gt_dir)
    return [(preds[name], gts[name]) for name in gts]


def class_list(pred_dir: Path, num_classes: int | None) -> tuple[int, list[str] | None]:
    """The class count and names of a prediction folder: from its run.json when it has one (checked against
    `num_classes`), else `num_classes` without names."""
    run = read_run(pred_dir)
    if run is not None and "settings" in run:  # why the other branch: a hand-made run.json may hold just a list
        run = run["settings"]
        if not isinstance(run, dict):
            raise ValueError(f"{pred_dir}/run.json: 'settings' must be a JSON object")
    names = run.get("classes") if run else None
    if run is not None and names is None and "query" in run:
        raise ValueError(f"{pred_dir}/run.json is of a --query run: it has no class list and no label maps to score")
    if names is None:
        if num_classes is None:
            raise ValueError(f"--num-classes is needed: --pred {pred_dir} has no run.json with a class list")
        return num_classes, None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{pred_dir}/run.json: 'classes' must be a non-empty list of names")
    if num_classes is not None and num_classes != len(names):
        raise ValueError(
            f"--num-classes {num_classes} does not match the {len(names)} classes in {pred_dir}/run.json "
            "(leave --num-classes out to use them)"
        )
    return len(names), names


def _check_prediction(pred: np.ndarray, path: Path, num_classes: int) -> None:
    """A label.png written by lasagna holds class indices or the void: anything else means another class list."""
    bad = (pred >= num_classes) & (pred != void_value(num_classes))
    if bad.any():
        raise ValueError(
            f"{path} holds class index {int(pred[bad].max())}, but the run has {num_classes} classes "
            f"(0..{num_classes - 1}, void {void_value(num_classes)}): was it written with another class list?"
        )


def _check_gt(gt: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> None:
    """A GT file holds class ids and its ignore value; named in the file's own values (the metric sees the ignore
    value as IGNORE_LABEL, which the user never wrote)."""
    bad = ((gt < 0) | (gt >= num_classes)) & (gt != ignore_index)
    if bad.any():
        raise ValueError(
            f"{path}: gt holds value {int(gt[bad][0])}, which is neither a class id 0..{num_classes - 1} nor the "
            f"ignore value {ignore_index} (--ignore)"
        )


def semseg_metrics(
    pred_dir: Path,
    gt_dir: Path,
    num_classes: int | None = None,
    ignore_index: int | None = None,
    convention: str = "correct",
) -> dict:
    """mIoU, pixel accuracy and per-class IoU (list and table rows) over all paired label PNGs of two folders.

    `num_classes` may be None when `pred_dir` has a run.json with the class list. `ignore_index` is the GT files'
    void value (default 255, or 65535 past 255 classes); it must not be a class id (0..num_classes-1).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"--pred {pred_dir} is not a directory")
    num_classes, names = class_list(pred_dir, num_classes)
    if ignore_index is None:
        ignore_index = void_value(num_classes)
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore value {ignore_index} is a class id (0..{num_classes - 1}); pass the GT files' void value, "
            "e.g. --ignore 65535 for 16-bit label PNGs"
        )
    metric = SemanticIoU(num_classes, convention=convention)
    strict = is_output_folder(pred_dir)
    pairs = paired_pngs(pred_dir, gt_dir)
    for pred_path, gt_path in tqdm(pairs, desc="semseg metrics", unit="img"):
        pred, gt = read_label_png(pred_path), read_label_png(gt_path)
        if strict:
            _check_prediction(pred, pred_path, num_classes)
        if convention == "correct":  # why: "released" maps every other value to class 0, as the released code did
            _check_gt(gt, gt_path, num_classes, ignore_index)
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
        "classes": names,
        "per_class": per_class_rows(metric, names),
    }


def _run_semseg(args: argparse.Namespace) -> int:
    result = semseg_metrics(args.pred, args.gt, args.num_classes, args.ignore, args.convention)
    print(format_table(result["per_class"]), file=sys.stderr)
    if args.chart:
        title = f"{args.pred.name or args.pred} against {args.gt.name or args.gt}: per-class IoU"
        print(f"wrote {save_iou_chart(args.chart, result['per_class'], title)}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `metrics` with its `semseg` subcommand."""
    parser = subparsers.add_parser("metrics", help="score saved predictions against ground truth")
    kinds = parser.add_subparsers(dest="metrics_kind", metavar="KIND", required=True)
    semseg = kinds.add_parser("semseg", help="mIoU of label PNGs against GT label PNGs")
    semseg.add_argument(
        "--pred",
        type=Path,
        required=True,
        help="output folder of `lasagna segment --out` / `eval --save-preds` (<rel>/label.png), "
        "or a folder of predicted label PNGs",
    )
    semseg.add_argument("--gt", type=Path, required=True, help="folder of GT label PNGs (<rel>.png)")
    semseg.add_argument(
        "--num-classes", type=int, help="K: class ids are 0..K-1 (default: the classes of --pred's run.json)"
    )
    semseg.add_argument(
        "--ignore",
        type=int,
        help="GT file value excluded from scoring (default 255, or 65535 past 255 classes); must not be a class id",
    )
    semseg.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="correct",
        help="'correct' excludes ignore pixels and counts unlabelled predictions wrong; "
        "'released' maps both to class 0 like the released code",
    )
    semseg.add_argument("--chart", type=Path, help="also write a bar chart PNG of per-class IoU here")
    semseg.set_defaults(func=_run_semseg)
