"""Semantic records -> complex-query conversations (the three LaSagnA strategies, each a config switch).

Vocabulary used below:
- present: a class with >= min_pixels labelled pixels; absent: a class with no pixel. A class with a few pixels
  (0 < count < min_pixels) is neither: it is never asked about in the answer, so it is never called absent.
- answered set: the classes the answer speaks about, all present ones plus sampled absent ones (`list_length`).
- question list: the names between `<cat_start>` and `<cat_end>`: the answered set ("random", the paper's random
  class list) or every dataset class ("full", the released code), always in a fresh random order.
- answer order: the answered set in question order ("question", the paper's target order consistency) or in an
  independent permutation ("shuffled", the released code).

Released-code equivalent: class_list="full", answer_order="shuffled", list_length=(80, 80).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lasagna.data.records import IGNORE_LABEL, SemanticRecord
from lasagna.data.tasks_common import Conversation, Sample, SampleMeta, load_image, user_text
from lasagna.prompts import SINGLE_CLASS_ANSWER, semantic_answer, semantic_question, single_class_question


@dataclass
class SemanticTaskConfig:
    """How a semantic record becomes a conversation; defaults are the paper's recipe.

    negatives_in_answer: sequence augmentation. Absent classes are answered `name<no_ins>`; off, the answer lists
        only present classes (the question still lists every class of the question list).
    class_list: "random" asks about the answered set only; "full" lists every dataset class (released code).
    list_length: [min, max] size of the answered set, drawn uniformly from the feasible range
        [max(min, #present), min(max, #present + #absent)]. The default max of 80 is the released code's
        `num_all_classes`: the longest answer it was trained on, and a 171-name question plus 80 answer items
        fits LLaMA's 2048-token context. The min of 1 keeps short queries (a user asking for one or two classes,
        an inference chunk) in distribution. When #present > max, the answered set is a random `max * 2 // 3`
        present classes plus absent ones up to max: the released code's 2:1 ratio, so crowded images still teach
        `<no_ins>`.
    list_sampling: "present_first" (the released code) lists every present class and fills the list with random
        absent ones, so a class that is often present (a stuff class) is listed mostly when present and the model
        learns that as a prior. "uniform" draws the list uniformly from every class, present or absent, as a
        random chunk of a full-list query at inference does: each class is then listed present as often as it is
        present in the data (docs/history.md counts both). "frequency" lists every present class, as
        "present_first", but draws the absent ones with weight f / (1 - f), f being how often that class is present
        in the source (`class_frequencies`): a class present in most images is asked about just as often when it
        is absent, so its name alone no longer predicts its answer and only the image can.
    frequency_records: how many records (the first ones of each source) "frequency" counts classes on. A dataset
        whose files are grouped (by scene, say) needs a count that spans the groups.
    confusable_weight: an absent class whose name shares a word with a present class's name ("red circle" absent,
        "red square" present) is drawn with this many times its weight ("present_first" and "frequency"). why: the
        errors left are such near misses (docs/history.md); the far ones are learnt early, and
        then a list of them teaches little. 1 is the released code's draw.
    confusable_from: the first mixture item drawn with `confusable_weight`; earlier ones draw with weight 1. A
        training run reads items (g * world + rank) * batch_size + j, g = step * grad_accum (`train/fit.py`): with
        one process, batch 8 and no accumulation, item 8 * S is the first of step S. A record formatted outside a
        mixture (no item index) draws with `confusable_weight`. why: the runs with near-miss lists from their start
        never learned spatial relations in referring, and a model that had learned them kept them through the lists
        (docs/history.md).
    answer_order: "question" walks the question list in order; "shuffled" draws an independent permutation.
    single_class: the LISA-style ablation baseline: one conversation per present class (at most
        `max_conversations`), answer "<ins>"; the list switches above are then unused.
    min_pixels: the pixels a class needs to count as present.
    """

    negatives_in_answer: bool = True
    class_list: Literal["random", "full"] = "random"
    list_length: tuple[int, int] = (1, 80)
    list_sampling: Literal["present_first", "uniform", "frequency"] = "present_first"
    frequency_records: int = 512
    confusable_weight: float = 1.0
    confusable_from: int = 0
    answer_order: Literal["question", "shuffled"] = "question"
    single_class: bool = False
    max_conversations: int = 3
    min_pixels: int = 1

    def __post_init__(self) -> None:
        low, high = self.list_length
        if not 1 <= low <= high:
            raise ValueError(f"list_length must be [min, max] with 1 <= min <= max, got {list(self.list_length)}")
        if self.max_conversations < 1:
            raise ValueError(f"max_conversations must be >= 1, got {self.max_conversations}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")
        if self.class_list not in ("random", "full"):
            raise ValueError(f"class_list must be 'random' or 'full', got {self.class_list!r}")
        if self.list_sampling not in ("present_first", "uniform", "frequency"):
            raise ValueError(
                f"list_sampling must be 'present_first', 'uniform' or 'frequency', got {self.list_sampling!r}"
            )
        if self.frequency_records < 1:
            raise ValueError(f"frequency_records must be >= 1, got {self.frequency_records}")
        if not self.confusable_weight > 0:
            raise ValueError(f"confusable_weight must be > 0, got {self.confusable_weight}")
        if self.confusable_from < 0:
            raise ValueError(f"confusable_from must be a mixture item index >= 0, got {self.confusable_from}")
        if self.confusable_weight != 1 and self.list_sampling == "uniform":
            raise ValueError("confusable_weight weighs absent classes against each other; 'uniform' lists do not")
        if self.answer_order not in ("question", "shuffled"):
            raise ValueError(f"answer_order must be 'question' or 'shuffled', got {self.answer_order!r}")


@dataclass(frozen=True)
class _LabelStats:
    names: list[str]  # lower-cased, index = class id
    present: list[int]
    absent: list[int]
    label: np.ndarray = field(repr=False)
    ignore: np.ndarray = field(repr=False)


def format_semantic(
    record: SemanticRecord,
    rng: random.Random,
    cfg: SemanticTaskConfig,
    source: str = "",
    frequencies: np.ndarray | None = None,
    item: int | None = None,
) -> Sample:
    """One sample: a complex query over a class list, or (single_class) one query per present class.

    `frequencies` (per class of the record's dataset, from `class_frequencies`) is needed by, and only used by,
    `list_sampling="frequency"`. `item` is the sample's mixture index, for `confusable_from`.
    """
    image = load_image(record.load_image, record.image_id)
    stats = _label_stats(record, image.shape[:2], cfg.min_pixels)
    if cfg.single_class:
        return _single_class(image, stats, rng, cfg, source, record.image_id)
    weights = None
    if cfg.list_sampling == "frequency":
        weights = _absent_weights(frequencies, len(stats.names), record.image_id)
    if cfg.confusable_weight != 1 and (item is None or item >= cfg.confusable_from):
        weights = _confusable_weights(stats, weights, cfg.confusable_weight)
    answered = _sample_answered(stats, rng, cfg.list_length, cfg.list_sampling, weights)
    meta = SampleMeta(source, record.image_id, "semantic")
    if not answered:
        return Sample(image, [], stats.ignore, meta)
    listed = answered if cfg.class_list == "random" else list(range(len(stats.names)))
    question_order = rng.sample(listed, len(listed))
    present = set(stats.present)
    spoken = set(answered) if cfg.negatives_in_answer else set(answered) & present
    if cfg.answer_order == "question":
        answer_order = [c for c in question_order if c in spoken]
    else:
        answer_order = rng.sample(sorted(spoken), len(spoken))
    question = semantic_question([stats.names[c] for c in question_order], rng)
    answer = semantic_answer([stats.names[c] for c in answer_order], [c in present for c in answer_order])
    mask_ids = [c for c in answer_order if c in present]
    masks = _class_masks(stats.label, mask_ids)
    meta = SampleMeta(
        source,
        record.image_id,
        "semantic",
        classes_present=[stats.names[c] for c in mask_ids],
        classes_absent=[stats.names[c] for c in question_order if c not in present],
    )
    return Sample(image, [Conversation(question, answer, masks)], stats.ignore, meta)


def _label_stats(record: SemanticRecord, size: tuple[int, int] | None, min_pixels: int) -> _LabelStats:
    """Load the label map, check it (against the image size unless `size` is None), and split the dataset's classes
    into present / absent by pixel count."""
    num = len(record.classes)
    if num < 1:
        raise ValueError(f"{record.image_id}: a semantic record needs at least 1 class, got {num}")
    names = [user_text(name, "class name", record.image_id).lower() for name in record.classes]
    if len(set(names)) != num:
        raise ValueError(f"{record.image_id}: class names must be unique after lower-casing, got {names}")
    label = np.asarray(record.load_label())
    if size is not None and label.shape != size:
        raise ValueError(f"{record.image_id}: label map {label.shape} does not match the image size {size}")
    ignore = label == IGNORE_LABEL
    valid = label[~ignore]
    if valid.size and (valid.min() < 0 or valid.max() >= num):
        raise ValueError(
            f"{record.image_id}: label values must be 0..{num - 1} or {IGNORE_LABEL}, "
            f"found {valid.min()}..{valid.max()}"
        )
    counts = np.bincount(valid.astype(np.int64), minlength=num)
    return _LabelStats(
        names=names,
        present=np.flatnonzero(counts >= min_pixels).tolist(),
        absent=np.flatnonzero(counts == 0).tolist(),
        label=label,
        ignore=ignore,
    )


def class_frequencies(source, min_pixels: int = 1, records: int = 512) -> np.ndarray:
    """(num_classes,) float: the share of the first `records` records of a semantic `source` in which each class has
    at least `min_pixels` labelled pixels (what `list_sampling="frequency"` weighs absent classes by)."""
    count = min(records, len(source))
    if count < 1:
        raise ValueError("class_frequencies needs a source with at least one record")
    num = len(source[0].classes)
    present = np.zeros(num, np.int64)
    for i in range(count):
        record = source[i]
        if len(record.classes) != num:
            raise ValueError(
                f"{record.image_id}: {len(record.classes)} classes where the source's first record has {num}; "
                "class frequencies need one class list per source"
            )
        present[_label_stats(record, None, min_pixels).present] += 1
    return present / count


def _absent_weights(frequencies: np.ndarray | None, num: int, image_id: str) -> np.ndarray:
    """Per class f / (1 - f): the odds that make a class listed absent as often as present. f is kept 1/1024 away
    from 0 and 1, so a class never seen present can still be asked and one always seen present gets a large, finite
    weight."""
    if frequencies is None:
        raise ValueError(
            "list_sampling 'frequency' needs the class frequencies of the record's source (class_frequencies); "
            "the training Mixture computes them"
        )
    f = np.asarray(frequencies, dtype=np.float64)
    if f.shape != (num,):
        raise ValueError(f"{image_id}: {f.shape[0] if f.ndim == 1 else f.shape} class frequencies for {num} classes")
    floor = 1 / 1024
    f = f.clip(floor, 1 - floor)
    return f / (1 - f)


def _confusable_weights(stats: _LabelStats, weights: np.ndarray | None, factor: float) -> np.ndarray:
    """`weights` (ones when None) with each absent class that shares a name word with a present class scaled by
    `factor`."""
    out = np.ones(len(stats.names)) if weights is None else np.array(weights, dtype=np.float64)
    present_words = {word for c in stats.present for word in stats.names[c].split()}
    for c in stats.absent:
        if present_words.intersection(stats.names[c].split()):
            out[c] *= factor
    return out


def _weighted_sample(rng: random.Random, items: list[int], weights: np.ndarray, k: int) -> list[int]:
    """k of `items` without replacement, each draw in proportion to its weight (Efraimidis-Spirakis keys)."""
    keys = [math.log(1.0 - rng.random()) / weights[c] for c in items]  # log of u^(1/w): larger is likelier
    order = sorted(range(len(items)), key=lambda i: keys[i], reverse=True)
    return [items[i] for i in order[:k]]


def _sample_answered(
    stats: _LabelStats,
    rng: random.Random,
    list_length: tuple[int, int],
    sampling: str,
    absent_weights: np.ndarray | None = None,
) -> list[int]:
    """The answered set (unordered): present classes plus sampled absent ones (uniformly, or by `absent_weights`
    when given), or a uniform draw of both; see SemanticTaskConfig."""
    low, high = list_length
    present, absent = stats.present, stats.absent

    def absent_draw(k: int) -> list[int]:
        return rng.sample(absent, k) if absent_weights is None else _weighted_sample(rng, absent, absent_weights, k)

    if sampling == "uniform":
        known = present + absent
        high = min(high, len(known))
        return rng.sample(known, rng.randint(min(low, high), high))
    if len(present) > high:
        keep = max(1, high * 2 // 3)
        chosen = rng.sample(present, keep)
        return chosen + absent_draw(min(high - keep, len(absent)))
    low = max(low, len(present))
    high = min(high, len(present) + len(absent))
    length = rng.randint(low, high) if low <= high else high
    return present + absent_draw(length - len(present))


def _class_masks(label: np.ndarray, class_ids: list[int]) -> np.ndarray:
    """(len(class_ids), H, W) bool: label == id, in the given order; ignore pixels are never set."""
    ids = np.asarray(class_ids, dtype=np.int64).reshape(-1, 1, 1)
    return label[None] == ids


def _single_class(
    image: np.ndarray, stats: _LabelStats, rng: random.Random, cfg: SemanticTaskConfig, source: str, image_id: str
) -> Sample:
    chosen = rng.sample(stats.present, min(len(stats.present), cfg.max_conversations))
    conversations = [
        Conversation(
            question=single_class_question(stats.names[c], rng),
            answer=SINGLE_CLASS_ANSWER,
            masks=_class_masks(stats.label, [c]),
        )
        for c in chosen
    ]
    meta = SampleMeta(source, image_id, "semantic", classes_present=[stats.names[c] for c in chosen])
    return Sample(image, conversations, stats.ignore, meta)
