"""The task layer: records (from sources) -> samples of conversations with masks (for the collate).

All randomness comes from the `random.Random` passed in, so a sample is a pure function of (record, rng state,
config). The families live in tasks_semantic.py and tasks_text.py; this module is the public surface.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from lasagna.data.records import ReasonRecord, Record, ReferRecord, SemanticRecord, VQARecord
from lasagna.data.tasks_common import Conversation, Sample, SampleMeta
from lasagna.data.tasks_semantic import SemanticTaskConfig, class_frequencies, format_semantic
from lasagna.data.tasks_text import (
    ReasonTaskConfig,
    ReferTaskConfig,
    VQATaskConfig,
    format_reason,
    format_refer,
    format_vqa,
)

__all__ = [
    "Conversation",
    "ReasonTaskConfig",
    "ReferTaskConfig",
    "Sample",
    "SampleMeta",
    "SemanticTaskConfig",
    "TasksConfig",
    "VQATaskConfig",
    "class_frequencies",
    "format_reason",
    "format_record",
    "format_refer",
    "format_semantic",
    "format_vqa",
]


@dataclass
class TasksConfig:
    """One config per task family (the paper's recipe by default)."""

    semantic: SemanticTaskConfig = field(default_factory=SemanticTaskConfig)
    referring: ReferTaskConfig = field(default_factory=ReferTaskConfig)
    reasoning: ReasonTaskConfig = field(default_factory=ReasonTaskConfig)
    vqa: VQATaskConfig = field(default_factory=VQATaskConfig)


def format_record(
    record: Record,
    rng: random.Random,
    cfg: TasksConfig | None = None,
    source: str = "",
    frequencies: np.ndarray | None = None,
    item: int | None = None,
) -> Sample:
    """Format one record with the formatter of its type; `source` names its dataset in the sample's meta,
    `frequencies` are its class frequencies (semantic records with `list_sampling="frequency"` only) and `item` its
    mixture index (semantic records with `confusable_from` only)."""
    cfg = cfg or TasksConfig()
    if isinstance(record, SemanticRecord):
        return format_semantic(record, rng, cfg.semantic, source, frequencies, item)
    if isinstance(record, ReferRecord):
        return format_refer(record, rng, cfg.referring, source)
    if isinstance(record, ReasonRecord):
        return format_reason(record, rng, cfg.reasoning, source)
    if isinstance(record, VQARecord):
        return format_vqa(record, rng, cfg.vqa, source)
    raise TypeError(
        f"cannot format a {type(record).__name__}; expected SemanticRecord, ReferRecord, ReasonRecord or VQARecord"
    )
