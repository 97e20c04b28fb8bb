"""What every reader shares: the data root, path checks whose errors show the expected layout, and the
label-map source used by all semantic datasets.

Data root: an explicit `root` argument, else the `LASAGNA_DATA` environment variable. Every dataset documents its
tree relative to that root; a missing root, file or folder raises FileNotFoundError naming the path and that tree.

Layouts: a dataset may sit under the root in more than one tree. "official" is the tree of the dataset's own archives
(ADEChallengeData2016/, refer/, ...); "lisa" is the `dataset/` tree of the LISA and LaSagnA READMEs (ade20k/,
refer_seg/, ...). Readers that know both take `layout="auto"` (try them in that order), "official" or "lisa"; when
none is found, the error names every path tried.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from lasagna.data.records import IGNORE_LABEL, Record, SemanticRecord, TaskName
from lasagna.data.sources.imageio import read_label
from lasagna.preprocess import to_rgb
from lasagna.tokens import reserved_in

DATA_ENV = "LASAGNA_DATA"
LAYOUTS = ("auto", "official", "lisa")
INVALID = IGNORE_LABEL - 1
"""Lookup-table value for raw label ids that the dataset never uses: meeting one is an error, not ignore.
Negative like IGNORE_LABEL and distinct from it, so it is neither a class id nor void."""


@dataclass(frozen=True)
class Layout:
    """A dataset's name and its expected tree under the data root, used to check paths and to word errors."""

    dataset: str
    tree: str
    lisa_tree: str = ""  # the same files in the LISA / LaSagnA README tree, for readers that know it

    def _error(self, problem: str) -> FileNotFoundError:
        text = f"{self.dataset}: {problem}\nExpected layout under the data root:\n{self.tree}"
        if self.lisa_tree:
            text += f"\nor, as the LISA / LaSagnA READMEs lay it out (layout 'lisa'):\n{self.lisa_tree}"
        return FileNotFoundError(text)

    def pick(self, layout: str, candidates: Mapping[str, Path]) -> str:
        """The first layout (in `candidates` order, or only `layout` unless it is "auto") whose path exists.

        `candidates` maps a layout name to one path that layout has (its annotation folder, say); none existing is
        FileNotFoundError naming every path tried.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"{self.dataset}: unknown layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
        if layout != "auto" and layout not in candidates:
            raise ValueError(f"{self.dataset}: no {layout!r} layout; known: {', '.join(candidates)}")
        tried = dict(candidates) if layout == "auto" else {layout: candidates[layout]}
        for name, path in tried.items():
            if path.exists():
                return name
        paths = "\n".join(f"  {path}  (layout {name!r})" for name, path in tried.items())
        raise self._error(f"none of these paths exists:\n{paths}")

    def root(self, root: str | Path | None) -> Path:
        """The data root: `root` if given, else $LASAGNA_DATA; it must be a directory."""
        if root is None:
            env = os.environ.get(DATA_ENV)
            if not env:
                raise self._error(f"no data root: pass root=... or set the {DATA_ENV} environment variable.")
            root = env
        path = Path(root).expanduser()
        if not path.is_dir():
            raise self._error(f"data root {path} is not a directory.")
        return path

    def one_file(self, root: str | Path | None, names: list[str]) -> Path:
        """A dataset held in one file: `root` itself when it is a file, else the first of `names` under the root
        that exists; none is FileNotFoundError naming every path tried."""
        if root is not None and Path(root).expanduser().is_file():
            return Path(root).expanduser()
        base = self.root(root)
        candidates = [base / name for name in names]
        for path in candidates:
            if path.is_file():
                return path
        tried = "\n".join(f"  {p}" for p in candidates)
        raise FileNotFoundError(f"{self.dataset}: none of these files exists:\n{tried}\nExpected layout:\n{self.tree}")

    def require(self, path: Path) -> Path:
        """`path` itself, or FileNotFoundError naming it and the expected tree."""
        if not path.exists():
            raise self._error(f"expected {path}, which does not exist.")
        return path

    def files(self, directory: Path, pattern: str) -> list[Path]:
        """Sorted files in `directory` matching the glob `pattern`; none at all is an error."""
        found = sorted(p for p in self.require(directory).glob(pattern) if p.is_file())
        if not found:
            raise self._error(f"no files matching {pattern!r} in {directory}.")
        return found

    def require_all(self, paths: Iterable[Path], what: str) -> None:
        """Check many files exist with one directory listing per folder instead of one stat per file."""
        listings: dict[Path, set[str]] = {}
        missing = []
        for path in paths:
            if path.parent not in listings:
                listings[path.parent] = set(os.listdir(path.parent)) if path.parent.is_dir() else set()
            if path.name not in listings[path.parent]:
                missing.append(path)
        if missing:
            raise self._error(f"{len(missing)} {what} missing, for example {missing[0]}.")

    def split(self, split: str, allowed: Sequence[str]) -> str:
        if split not in allowed:
            raise ValueError(f"{self.dataset}: unknown split {split!r}; known splits: {', '.join(allowed)}")
        return split


def build_lut(size: int, raw_ids: Sequence[int], ignore_ids: Iterable[int]) -> np.ndarray:
    """(size,) int64 table: raw_ids[k] -> k, ignore_ids -> IGNORE_LABEL, every other raw value -> INVALID.

    `size` is one more than the largest raw value the label files can hold (256 for 8-bit, 65536 for 16-bit).
    A raw id listed in both raw_ids and ignore_ids is a class: the class ids are written last.
    """
    lut = np.full(size, INVALID, dtype=np.int64)
    lut[list(ignore_ids)] = IGNORE_LABEL
    lut[list(raw_ids)] = np.arange(len(raw_ids))
    return lut


def read_mapped_label(path: str | Path, lut: np.ndarray, wide: bool = False) -> np.ndarray:
    """Read a label file and map raw ids to contiguous class ids: (H, W) int64, IGNORE_LABEL for void pixels.

    The file's own void values (255, 65535, ...) never reach the result: `lut` maps them to IGNORE_LABEL. `wide`:
    the dataset has a class 255, so an 8-bit file (whose 255 is usually void) is refused rather than misread.
    """
    raw = read_label(path)
    if wide and raw.dtype == np.uint8:
        raise ValueError(
            f"label file {path} is 8-bit, but this dataset has more than 255 classes (255 is a class): "
            "write 16-bit PNG labels with 65535 for ignore"
        )
    if raw.size and (raw.min() < 0 or raw.max() >= len(lut)):
        raise ValueError(f"label file {path} has values in [{raw.min()}, {raw.max()}], expected 0..{len(lut) - 1}")
    label = lut[raw]
    invalid = label == INVALID
    if invalid.any():
        unexpected = np.unique(raw[invalid])[:10].tolist()
        raise ValueError(f"label file {path} has raw ids {unexpected} that this dataset does not define")
    return label


@dataclass(frozen=True)
class LabeledImage:
    """One sample of a semantic dataset: where its image and its raw label map are."""

    image_id: str
    image: Path
    label: Path


@dataclass(frozen=True, eq=False)
class SemanticSource:
    """A semantic-segmentation split: records are built on access, pixels are read only by the loaders.

    `lut` maps the dataset's raw label values to indices into `classes` (see `build_lut`); `wide` refuses 8-bit
    label files (see `read_mapped_label`).
    """

    name: str
    classes: tuple[str, ...]
    items: tuple[LabeledImage, ...]
    lut: np.ndarray
    wide: bool = False
    task: ClassVar[TaskName] = "semantic"

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"{self.name}: class names must be unique")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SemanticRecord:
        item = self.items[index]
        return SemanticRecord(
            image_id=item.image_id,
            # label maps index the stored pixel grid, so the image must not be turned by its EXIF tag
            load_image=partial(to_rgb, item.image, exif_transpose=False),
            load_label=partial(read_mapped_label, item.label, self.lut, self.wide),
            classes=self.classes,
        )


@dataclass(frozen=True, eq=False)
class RecordSource:
    """A split whose records are all built while parsing the annotation files (referring, reasoning, VQA)."""

    name: str
    task: TaskName
    records: tuple[Record, ...]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file of a dataset, found by a reader's scan or by `lasagna data check`."""

    path: Path
    message: str
    error: bool = True  # False: a warning (the data still loads, but it may not be what was meant)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def class_name_problems(names: Sequence[str], where: Path) -> list[Problem]:
    """Empty names, names holding a reserved token string or a comma (the separator of a class list), and names
    that repeat one before them once case, spaces and Unicode form are ignored (the model reads them lower-cased;
    NFKC folds an accent typed as one code point or two, and full-width letters, which look alike to a user)."""
    problems, seen = [], {}
    for index, name in enumerate(names):
        key = " ".join(unicodedata.normalize("NFKC", name).lower().split())
        if not key:
            problems.append(Problem(where, f"class {index} has an empty name"))
            continue
        reserved = reserved_in(name)  # any case: the prompt lower-cases names ("<INS>" becomes "<ins>")
        if reserved:
            problems.append(Problem(where, f"class {index} {name!r} contains the reserved token string(s) {reserved}"))
        if "," in name:
            problems.append(
                Problem(where, f"class {index} {name!r} contains a comma, which separates names in a query")
            )
        if key in seen:
            problems.append(Problem(where, f"class {index} {name!r} repeats class {seen[key]} {names[seen[key]]!r}"))
        seen.setdefault(key, index)
    return problems


def raise_problems(dataset: str, root: str | Path | None, problems: Sequence[Problem]) -> None:
    """ValueError listing the first error problems (each names its file), if there are any; warnings pass."""
    errors = [p for p in problems if p.error]
    if not errors:
        return
    shown = "\n  ".join(str(p) for p in errors[:10])
    more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
    root_arg = f" --root {root}" if root is not None else ""
    raise ValueError(
        f"{dataset}: {len(errors)} problem(s) in the data:\n  {shown}{more}\n"
        f"`lasagna data check --dataset {dataset}{root_arg}` lists them all"
    )
