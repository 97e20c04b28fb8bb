"""ShapeWorld as sources: one record per scene, for each task family.

Records are cheap to list: texts come from the cached scene, and pixels are read through `functools.partial` of
the module-level loaders below (picklable for DataLoader workers). Loaders return fresh writable arrays; the
scene cache means the image, label and masks of one scene are rendered once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np

from ..data.records import Expression, ReasonRecord, ReferRecord, SemanticRecord, TaskName, VQARecord
from .reasoning import reasoning_item
from .referring import NO_TARGET_RATE, referring_items
from .scene import MIN_SIZE, scene
from .vocab import MAX_INDEX, SPLIT_LENGTHS, check_split, classes
from .vqa import vqa_turns


def load_image(split: str, index: int, size: int) -> np.ndarray:
    """(S, S, 3) uint8 RGB."""
    return scene(split, index, size).image.copy()


def load_label(split: str, index: int, size: int) -> np.ndarray:
    """(S, S) int64 ids into classes(split)."""
    return scene(split, index, size).semantic.copy()


def load_masks(split: str, index: int, size: int, targets: tuple[int, ...]) -> np.ndarray:
    """(K, S, S) bool, one visible-pixel mask per target instance id; K = 0 for a no-target expression."""
    instances = scene(split, index, size).instances
    if not targets:
        return np.zeros((0, size, size), dtype=bool)
    return instances[None] == np.asarray(targets, dtype=np.int32)[:, None, None]


def load_reason_mask(split: str, index: int, size: int) -> np.ndarray:
    """(S, S) int64: 1 on the reasoning target, 0 elsewhere (no ignore), as ReasonRecord.load_mask gives."""
    sc = scene(split, index, size)
    return reasoning_item(sc).mask(sc).astype(np.int64)


@dataclass(frozen=True)
class _ShapeWorldSource:
    """A ShapeWorld split; `length` overrides the split's standard length (train 100000, others 500)."""

    split: str
    size: int = 128
    length: int | None = None
    task: ClassVar[TaskName]

    def __post_init__(self) -> None:
        check_split(self.split)
        if not isinstance(self.size, int) or self.size < MIN_SIZE:
            raise ValueError(f"ShapeWorld size must be an int >= {MIN_SIZE}, got {self.size!r}")
        if self.length is not None and not 0 <= self.length <= MAX_INDEX:
            raise ValueError(f"ShapeWorld length must be in [0, {MAX_INDEX}], got {self.length!r}")

    @property
    def name(self) -> str:
        return f"shapeworld/{self.split}/{self.task}"

    def __len__(self) -> int:
        return SPLIT_LENGTHS[self.split] if self.length is None else self.length

    def _check(self, index: int) -> tuple[str, str, int, int]:
        """(image_id, split, index, size) after a range check."""
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range [0, {len(self)})")
        return f"shapeworld/{self.split}/{index:07d}", self.split, int(index), self.size


class ShapeWorldSemantic(_ShapeWorldSource):
    """Semantic segmentation over `classes(split)` (58 classes, or 70 for test-open)."""

    task: ClassVar[TaskName] = "semantic"

    def __getitem__(self, index: int) -> SemanticRecord:
        image_id, *key = self._check(index)
        return SemanticRecord(image_id, partial(load_image, *key), partial(load_label, *key), classes(self.split))


@dataclass(frozen=True)
class ShapeWorldReferring(_ShapeWorldSource):
    """Referring expressions, single-, multi- and no-target, about 4 per scene; `no_target_rate` (default the
    dataset's, 0.15) is the chance that an expression has no target, and `twins` adds each relation's and extreme's
    opposite (`referring_items`). Evaluation keeps the defaults: a training run may ask for more no-target
    expressions, or twins, without changing what it is measured on."""

    no_target_rate: float = NO_TARGET_RATE
    twins: bool = False
    task: ClassVar[TaskName] = "referring"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.no_target_rate <= 1.0:
            raise ValueError(f"ShapeWorld no_target_rate must be in [0, 1], got {self.no_target_rate!r}")

    def __getitem__(self, index: int) -> ReferRecord:
        image_id, *key = self._check(index)
        items = referring_items(scene(*key), no_target_rate=self.no_target_rate, twins=self.twins)
        expressions = tuple(Expression(i.text, partial(load_masks, *key, i.targets)) for i in items)
        return ReferRecord(image_id, partial(load_image, *key), expressions)


class ShapeWorldReasoning(_ShapeWorldSource):
    """One reasoning query per scene, in three phrasings; the target is never empty."""

    task: ClassVar[TaskName] = "reasoning"

    def __getitem__(self, index: int) -> ReasonRecord:
        image_id, *key = self._check(index)
        item = reasoning_item(scene(*key))
        return ReasonRecord(
            image_id,
            partial(load_image, *key),
            item.queries,
            item.is_sentence,
            partial(load_reason_mask, *key),
            item.explanation,
        )


class ShapeWorldVQA(_ShapeWorldSource):
    """Three short-answer questions per scene."""

    task: ClassVar[TaskName] = "vqa"

    def __getitem__(self, index: int) -> VQARecord:
        image_id, *key = self._check(index)
        return VQARecord(image_id, partial(load_image, *key), vqa_turns(scene(*key)))
