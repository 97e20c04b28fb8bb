"""`lasagna data check`: read every file of a dataset the way training will, before hours are spent on it.

What is checked, each problem naming its file:
- the tree: missing folders and files, photos without labels, bad entries in COCO / JSON-lines files (the user
  formats' scans, `lasagna.data.sources.SCANS`; any other dataset is opened as training opens it);
- class names: empty, repeated (case and spaces ignored), holding a reserved token string (`<ins>`, ...) or a comma;
- every photo: readable, not empty; every label map or mask: readable, the photo's size, ids within the class list
  (semantic); every expression: non-empty text without reserved token strings, masks of the photo's size that
  cover at least one pixel when it has targets.

Warnings (the data loads, but may not be what was meant): label maps without a single labelled pixel, label files
without a photo, photos whose EXIF tag turns them in viewers (annotations index the pixels as stored). The report
counts photos, classes and the share of labelled pixels each class holds, and prints a few conversations exactly
as `lasagna data preview` makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lasagna.data.records import IGNORE_LABEL, ReasonRecord, ReferRecord, SemanticRecord, Source, VQARecord
from lasagna.data.sources import SCANS, open_source, reader_options
from lasagna.data.sources.base import Problem, class_name_problems
from lasagna.data.sources.imageio import exif_orientation
from lasagna.tokens import reserved_in

_READ_ERRORS = (OSError, ValueError, KeyError, TypeError)  # what a reader raises on a bad file (each names it)


@dataclass
class CheckReport:
    """What `check_dataset` found; `errors` make the check fail, `warnings` do not."""

    dataset: str
    split: str
    task: str | None = None
    images: int = 0
    classes: list[str] = field(default_factory=list)
    class_pixels: np.ndarray | None = None  # labelled pixels per class
    class_images: np.ndarray | None = None  # photos holding each class
    ignored_pixels: int = 0
    total_pixels: int = 0
    expressions: int = 0
    no_target: int = 0
    problems: list[Problem] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.error]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.error]


def _file_of(loader: Callable, fallback: Path) -> Path:
    """The file a lazy loader reads: readers build loaders as `partial(reader, path, ...)`."""
    if isinstance(loader, partial) and loader.args and isinstance(loader.args[0], Path):
        return loader.args[0]
    return fallback


def _open(name: str, root: str | None, split: str, options: dict[str, Any], report: CheckReport) -> Source | None:
    """The source (None when nothing can be read), its scan's problems added to the report."""
    where = Path(root) if root else Path(".")
    try:
        options = reader_options(name, options)
        if name in SCANS:
            source, problems = SCANS[name](root, split, **options)
            report.problems += problems
            return source
        return open_source(name, root, split, **options)
    except (FileNotFoundError, ValueError) as err:
        report.problems.append(Problem(where, str(err)))
        return None


def _read(report: CheckReport, loader: Callable, path: Path) -> np.ndarray | None:
    try:
        return np.asarray(loader())
    except _READ_ERRORS as err:
        report.problems.append(Problem(path, f"cannot be read: {err}"))
        return None


def _check_semantic(report: CheckReport, source: Source, index: int, record: SemanticRecord) -> None:
    items = getattr(source, "items", None)
    image_path = items[index].image if items else _file_of(record.load_image, Path(record.image_id))
    label_path = items[index].label if items else _file_of(record.load_label, image_path)
    image = _read(report, record.load_image, image_path)
    if image is None or not _has_pixels(report, image, image_path):
        return
    _check_orientation(report, image_path)
    label = _read(report, record.load_label, label_path)
    if label is None:
        return
    if label.shape != image.shape[:2]:
        report.problems.append(
            Problem(label_path, f"size {_wh(label.shape)} differs from the photo's {_wh(image.shape)}")
        )
        return
    num = len(report.classes)
    valid = label[label != IGNORE_LABEL]
    bad = np.unique(valid[(valid < 0) | (valid >= num)])
    if bad.size:
        report.problems.append(Problem(label_path, f"ids {bad[:10].tolist()} outside the {num} classes 0..{num - 1}"))
        return
    counts = np.bincount(valid.astype(np.int64), minlength=num)
    report.class_pixels += counts
    report.class_images += counts > 0
    report.ignored_pixels += int(label.size - valid.size)
    report.total_pixels += int(label.size)
    if not valid.size:
        report.problems.append(
            Problem(
                label_path,
                "no labelled pixel (every pixel is ignore): training would answer every class absent (<no_ins>) "
                "for this photo; label it or leave it out",
                False,
            )
        )


def _check_referring(report: CheckReport, record: ReferRecord) -> None:
    image_path = _file_of(record.load_image, Path(record.image_id))
    image = _read(report, record.load_image, image_path)
    if image is None or not _has_pixels(report, image, image_path):
        return
    _check_orientation(report, image_path)
    for expression in record.expressions:
        report.expressions += 1
        text = expression.text
        if not text.strip():
            report.problems.append(Problem(image_path, "an expression with empty text"))
        elif reserved_in(text):
            reserved = reserved_in(text)
            report.problems.append(Problem(image_path, f"expression {text!r} holds reserved token strings {reserved}"))
        masks = _read(report, expression.load_masks, _file_of(expression.load_masks, image_path))
        if masks is None:
            continue
        if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
            shape = _wh(masks.shape[1:]) if masks.ndim == 3 else str(masks.shape)
            report.problems.append(
                Problem(image_path, f"expression {text!r}: masks of size {shape}, the photo is {_wh(image.shape)}")
            )
        elif len(masks) and not masks.any():
            report.problems.append(
                Problem(
                    image_path,
                    f"expression {text!r}: its {len(masks)} target(s) cover no pixel, so training would answer it "
                    "<ins> with an empty mask (an expression that matches nothing has no targets)",
                )
            )
        report.no_target += len(masks) == 0


def _check_other(report: CheckReport, record: ReasonRecord | VQARecord) -> None:
    image_path = _file_of(record.load_image, Path(record.image_id))
    image = _read(report, record.load_image, image_path)
    if image is None or not _has_pixels(report, image, image_path) or not isinstance(record, ReasonRecord):
        return
    mask = _read(report, record.load_mask, _file_of(record.load_mask, image_path))
    if mask is not None and mask.shape != image.shape[:2]:
        report.problems.append(Problem(image_path, f"mask of size {_wh(mask.shape)}, photo {_wh(image.shape)}"))


def _has_pixels(report: CheckReport, image: np.ndarray, path: Path) -> bool:
    if image.size:
        return True
    report.problems.append(Problem(path, "empty photo (no pixels)"))
    return False


def _check_orientation(report: CheckReport, path: Path) -> None:
    """A photo that viewers show turned: label maps, polygons and RLE index its pixels as stored, so annotations drawn
    on the turned view are misplaced (upside down for orientation 3, with no size mismatch to give it away)."""
    try:
        orientation = exif_orientation(path) if path.is_file() else 1
    except _READ_ERRORS:
        return  # the photo was read already; a header the tag reader dislikes is not this check's business
    if orientation != 1:
        report.problems.append(
            Problem(
                path,
                f"EXIF orientation {orientation}: viewers show this photo turned or mirrored, but its labels are "
                "read against its pixels as stored; check that they were drawn on the photo as stored",
                error=False,
            )
        )


def _wh(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def check_dataset(
    name: str,
    root: str | None,
    split: str = "train",
    options: dict[str, Any] | None = None,
    limit: int | None = None,
    examples: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> CheckReport:
    """Check the first `limit` records (all by default) of a dataset split; see the module docstring."""
    report = CheckReport(dataset=name, split=split)
    source = _open(name, root, split, dict(options or {}), report)
    if source is None or len(source) == 0:
        return report
    report.task = source.task
    count = len(source) if limit is None else min(limit, len(source))
    if source.task == "semantic":
        report.classes = list(source[0].classes)
        if name not in SCANS:  # the user formats' scans already checked their names, against their own files
            report.problems += class_name_problems(report.classes, Path(root or "."))
        report.class_pixels = np.zeros(len(report.classes), np.int64)
        report.class_images = np.zeros(len(report.classes), np.int64)
    for index in tqdm(range(count), desc=f"check {name}", unit="image", disable=not progress):
        record = source[index]
        report.images += 1
        if isinstance(record, SemanticRecord):
            _check_semantic(report, source, index, record)
        elif isinstance(record, ReferRecord):
            _check_referring(report, record)
        else:
            _check_other(report, record)
    if examples > 0:
        from lasagna.data.cli import preview_lines  # the CLI module registers this one: imported late, no cycle

        try:
            report.examples = preview_lines(source, examples, seed)
        except _READ_ERRORS as err:
            if not report.errors:  # else the errors above already say why
                report.problems.append(Problem(Path(root or "."), f"the examples cannot be formatted: {err}", False))
    return report


def format_report(report: CheckReport, max_problems: int = 50) -> str:
    """The report as text: counts, pixel shares, example conversations, then every problem (up to `max_problems`
    of each kind)."""
    lines = [f"{report.dataset} ({report.split}): {report.task or 'not readable'}, {report.images} photos checked"]
    if report.classes:
        lines.append(f"classes: {len(report.classes)}")
        labelled = max(int(report.class_pixels.sum()), 1)
        lines.append("labelled-pixel share per class (photos holding it):")
        width = max(len(c) for c in report.classes)
        for i in np.argsort(-report.class_pixels, kind="stable"):
            share = 100 * report.class_pixels[i] / labelled
            lines.append(f"  {report.classes[i]:<{width}}  {share:6.2f}%  ({report.class_images[i]})")
        if report.total_pixels:
            lines.append(f"ignore pixels: {100 * report.ignored_pixels / report.total_pixels:.2f}% of all pixels")
    if report.expressions:
        lines.append(f"expressions: {report.expressions} ({report.no_target} without a target)")
    if report.examples:
        lines.append("example conversations (as `lasagna data preview` makes them):")
        for example in report.examples:
            lines.append(f"  [{example['image']}] Q: {example['question']!r}")
            lines.append(f"  {' ' * (len(example['image']) + 2)} A: {example['answer']!r}")
    for kind, problems in (("errors", report.errors), ("warnings", report.warnings)):
        if problems:
            lines.append(f"{kind}: {len(problems)}")
            lines += [f"  {p}" for p in problems[:max_problems]]
            if len(problems) > max_problems:
                lines.append(f"  ... and {len(problems) - max_problems} more")
    lines.append("FAILED: fix the errors above" if report.errors else "OK")
    return "\n".join(lines)
