"""What sources give: one dataclass per task family, no tensors, no randomness.

Images and labels are loaded lazily through zero-argument callables (`functools.partial` of a reader function), so
a source can list a whole dataset without reading a pixel, and records stay picklable for DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

IGNORE_LABEL = -1
"""Label value for pixels that belong to no class (void); never a target pixel, excluded from metrics.

Negative, so it can never be a class id: class ids are 0..C-1 for any C (PASCAL-Context-459 has a class 255).
It lives only in memory (int64 label maps and masks); label files keep their own void values (255, 65535, 0, ...)
and their readers map those to IGNORE_LABEL. Writers of 8-bit label PNGs use LABEL_PNG_IGNORE.
"""

LABEL_PNG_IGNORE = 255
"""Void value in the 8-bit label PNGs this project writes and, by default, reads (`lasagna metrics semseg`)."""

Loader = Callable[[], np.ndarray]
TaskName = Literal["semantic", "referring", "reasoning", "vqa"]


@dataclass(frozen=True)
class SemanticRecord:
    """An image with a dense label map.

    load_image() -> (H, W, 3) uint8 RGB. load_label() -> (H, W) int64 whose values index `classes`, or
    IGNORE_LABEL. `classes` is the dataset's full class list in canonical order (ids are contiguous).
    """

    image_id: str
    load_image: Loader
    load_label: Loader
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Expression:
    """A referring expression. load_masks() -> (K, H, W) bool, one mask per target; K == 0 means no target."""

    text: str
    load_masks: Loader


@dataclass(frozen=True)
class ReferRecord:
    """An image with its referring expressions (refCOCO family, gRefCOCO, ShapeWorld)."""

    image_id: str
    load_image: Loader
    expressions: tuple[Expression, ...]


@dataclass(frozen=True)
class ReasonRecord:
    """A reasoning query. load_mask() -> (H, W) int64: 1 target, 0 background, IGNORE_LABEL ignore."""

    image_id: str
    load_image: Loader
    queries: tuple[str, ...]
    is_sentence: bool
    load_mask: Loader
    explanation: str | None = None


@dataclass(frozen=True)
class VQARecord:
    """A visual chat: turns of (human, assistant) text, without the `<image>` placeholder."""

    image_id: str
    load_image: Loader
    turns: tuple[tuple[str, str], ...] = field(default_factory=tuple)


Record = SemanticRecord | ReferRecord | ReasonRecord | VQARecord


class Source(Protocol):
    """A dataset split as a sequence of records."""

    name: str
    task: TaskName

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Record: ...
