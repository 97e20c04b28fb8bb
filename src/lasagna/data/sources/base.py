"""What every reader shares: the data root, path checks whose errors show the expected layout, and the
label-map source used by all semantic datasets.

Data root: an explicit `root` argument, else the `LASAGNA_DATA` environment variable. Every dataset documents its
tree relative to that root; a missing root, file or folder raises FileNotFoundError naming the path and that tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from lasagna.data.records import IGNORE_LABEL, Record, SemanticRecord, TaskName
from lasagna.data.sources.imageio import read_label
from lasagna.preprocess import to_rgb

DATA_ENV = "LASAGNA_DATA"
INVALID = IGNORE_LABEL - 1
"""Lookup-table value for raw label ids that the dataset never uses: meeting one is an error, not ignore.
Negative like IGNORE_LABEL and distinct from it, so it is neither a class id nor void."""


@dataclass(frozen=True)
class Layout:
    """A dataset's name and its expected tree under the data root, used to check paths and to word errors."""

    dataset: str
    tree: str

    def _error(self, problem: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.dataset}: {problem}\nExpected layout under the data root:\n{self.tree}")

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


def read_mapped_label(path: str | Path, lut: np.ndarray) -> np.ndarray:
    """Read a label file and map raw ids to contiguous class ids: (H, W) int64, IGNORE_LABEL for void pixels.

    The file's own void values (255, 65535, ...) never reach the result: `lut` maps them to IGNORE_LABEL.
    """
    raw = read_label(path)
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

    `lut` maps the dataset's raw label values to indices into `classes` (see `build_lut`).
    """

    name: str
    classes: tuple[str, ...]
    items: tuple[LabeledImage, ...]
    lut: np.ndarray
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
            load_label=partial(read_mapped_label, item.label, self.lut),
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
