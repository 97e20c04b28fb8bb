"""A user's own semantic-segmentation data as a plain folder (`--dataset folder --root DIR`).

Tree (the folder `DIR`, or `DIR/<split>` when that folder exists, so one root can hold train/ and val/):

    images/<name>.jpg | .jpeg | .png     the photos
    labels/<name>.png                    one label map per photo, same size: pixel value = class id (PNG only:
                                         a JPEG's lossy compression would change the ids along every edge)
    classes.txt                          line i = the name of class id i (DIR/classes.txt serves every split)

Label values: 0..C-1 are the classes of classes.txt. With at most 255 classes, labels are 8-bit PNGs (mode L or P;
a palette's indices are the ids) and 255 is ignore (void, left out of losses and metrics). With more than 255
classes, 255 is a class id, so labels must be 16-bit PNGs and 65535 is ignore. Any other value is an error.

A tree without split folders is one split: it opens under any split name (train, val, test), so a model evaluated
on it sees the training images unless `--root` points at other data.

`scan_folder` lists what is there and every problem it can see without reading pixels (a photo without a label,
two photos of one name, bad class names); `folder` raises on those problems, `lasagna data check` prints them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lasagna.data.sources.base import (
    LabeledImage,
    Layout,
    Problem,
    SemanticSource,
    build_lut,
    class_name_problems,
    raise_problems,
)

FOLDER = Layout(
    "folder",
    "  images/<name>.jpg (or .jpeg, .png)\n"
    "  labels/<name>.png  (class ids; 255 ignore, or 16-bit PNGs with 65535 ignore for more than 255 classes)\n"
    "  classes.txt  (line i = the name of class id i)\n"
    "  (all three may sit in a <split>/ folder, e.g. train/ and val/, with classes.txt in either)",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NOT_PNG = "label maps must be PNGs, since JPEG's lossy compression changes ids at every edge"
IGNORE_8BIT = 255
IGNORE_16BIT = 65535
MAX_CLASSES = IGNORE_16BIT  # ids 0..65534 fit beside the 16-bit ignore value


@dataclass
class FolderScan:
    """What `scan_folder` found: the split's folder, its class names, the photo/label pairs and the problems."""

    base: Path
    classes_file: Path
    classes: list[str]
    items: list[LabeledImage] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def read_classes(path: Path) -> list[str]:
    """Class names, one a line, surrounding spaces removed; blank lines at the end are dropped (a blank line before
    the last name stays, as an empty name, so ids keep their line numbers and the check can name it)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark from Windows editors is not part of a name
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    return names


def _split_base(root: Path, split: str) -> Path:
    return root / split if (root / split / "images").is_dir() else root


def scan_folder(root: str | Path | None = None, split: str = "train") -> FolderScan:
    """List a folder tree's classes and photo/label pairs and collect the problems visible without reading pixels.

    A missing root, images/ folder or classes.txt is FileNotFoundError (nothing else can be checked without them).
    """
    top = FOLDER.root(root)
    base = _split_base(top, split)
    if base == top and not (top / "images").is_dir():
        splits = sorted(p.name for p in top.iterdir() if (p / "images").is_dir())
        if splits:  # why: `lasagna eval` reads split "test" unless told, and the plain missing path hides that
            raise FileNotFoundError(
                f"folder: no split {split!r} in {top} (no {top / split / 'images'}, no {top / 'images'}): its split "
                f"folders are {', '.join(splits)} (--split)"
            )
    image_dir = FOLDER.require(base / "images")
    classes_file = base / "classes.txt" if (base / "classes.txt").is_file() else top / "classes.txt"
    FOLDER.require(classes_file)
    scan = FolderScan(base=base, classes_file=classes_file, classes=read_classes(classes_file))
    if not scan.classes:
        scan.problems.append(Problem(classes_file, "no class names"))
    if len(scan.classes) > MAX_CLASSES:
        scan.problems.append(Problem(classes_file, f"{len(scan.classes)} classes; at most {MAX_CLASSES} fit"))
    scan.problems += class_name_problems(scan.classes, classes_file)

    by_name: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in by_name:
            scan.problems.append(Problem(path, f"a second photo named {path.stem!r} (also {by_name[path.stem].name})"))
            continue
        by_name[path.stem] = path
    if not by_name:
        scan.problems.append(Problem(image_dir, f"no photos ({', '.join(IMAGE_SUFFIXES)})"))
    label_dir = base / "labels"
    others: dict[str, Path] = {}  # label files of another type, named when a photo's PNG is missing
    labels: dict[str, Path] = {}
    for path in sorted(label_dir.iterdir()) if label_dir.is_dir() else []:
        if path.is_file():
            (labels if path.suffix.lower() == ".png" else others).setdefault(path.stem, path)
    for stem, image in by_name.items():
        if stem not in labels:
            hint = f" ({others[stem].name} is not a PNG: {_NOT_PNG})" if stem in others else ""
            scan.problems.append(Problem(label_dir / f"{stem}.png", f"missing: the label map of {image.name}{hint}"))
            continue
        scan.items.append(LabeledImage(stem, image, labels[stem]))
    for stem in sorted(set(labels) - set(by_name)):
        scan.problems.append(Problem(labels[stem], "a label map without a photo of its name: not used", error=False))
    return scan


def folder_lut(num_classes: int):
    """Raw value -> class id table for `num_classes` classes (see the module docstring for the ignore values)."""
    ignore = [IGNORE_16BIT] if num_classes > IGNORE_8BIT else [IGNORE_8BIT, IGNORE_16BIT]
    return build_lut(IGNORE_16BIT + 1, range(num_classes), ignore_ids=ignore)


def checked_folder(root: str | Path | None = None, split: str = "train") -> tuple[SemanticSource | None, list[Problem]]:
    """The source of every photo with a label and the scan's problems. The source comes even when class names have
    problems (so their pixels can still be checked), but not without pairs or with names repeated exactly."""
    scan = scan_folder(root, split)
    num = len(scan.classes)
    if not scan.items or not 0 < num <= MAX_CLASSES or len(set(scan.classes)) < num:
        return None, scan.problems  # no pairs, or no class list that ids could index
    source = SemanticSource("folder", tuple(scan.classes), tuple(scan.items), folder_lut(num), wide=num > IGNORE_8BIT)
    return source, scan.problems


def folder(root: str | Path | None = None, split: str = "train") -> SemanticSource:
    """The folder tree at `root` (see the module docstring) as a semantic source named "folder"."""
    source, problems = checked_folder(root, split)
    raise_problems("folder", root, problems)
    assert source is not None  # no source comes with an error problem
    return source
