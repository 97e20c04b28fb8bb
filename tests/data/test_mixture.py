from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from lasagna.data.mixture import RELEASED_DATASET_WEIGHTS, Mixture, MixtureConfig
from lasagna.data.records import Expression, ReasonRecord, ReferRecord, SemanticRecord, VQARecord
from lasagna.data.sources import SOURCES
from lasagna.data.sources.base import RecordSource
from lasagna.data.tasks import SemanticTaskConfig, TasksConfig, format_record

IMAGE = np.zeros((4, 4, 3), np.uint8)


def semantic_source(name: str, count: int = 6) -> RecordSource:
    def record(i: int) -> SemanticRecord:
        label = np.arange(16).reshape(4, 4) % 3
        return SemanticRecord(f"{name}-{i}", lambda: IMAGE, lambda: label, ("wall", "bed", "sky", "tree"))

    return RecordSource(name, "semantic", tuple(record(i) for i in range(count)))


def sources() -> dict[str, RecordSource]:
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1:3, 1:3] = True
    refer = ReferRecord("r0", lambda: IMAGE, (Expression("the square", lambda: mask),))
    reason = ReasonRecord("s0", lambda: IMAGE, ("What is red?",), True, lambda: mask[0].astype(np.uint8))
    vqa = VQARecord("v0", lambda: IMAGE, (("What is it?", "A square."),))
    return {
        "sem-a": semantic_source("sem-a"),
        "sem-b": semantic_source("sem-b"),
        "toy-refer": RecordSource("toy-refer", "referring", (refer,)),
        "toy-reason": RecordSource("toy-reason", "reasoning", (reason,)),
        "toy-vqa": RecordSource("toy-vqa", "vqa", (vqa,)),
    }


def key(sample):
    conv = sample.conversations[0]
    return sample.meta.source, sample.meta.image_id, conv.question, conv.answer, conv.masks.tobytes()


def test_item_is_a_pure_function_of_seed_epoch_index():
    a = Mixture(sources(), MixtureConfig(), seed=3, length=50)
    b = Mixture(sources(), MixtureConfig(), seed=3, length=50)
    forward = [key(a[i]) for i in range(50)]
    backward = [key(b[i]) for i in reversed(range(50))][::-1]
    assert forward == backward
    a.set_epoch(1)
    assert [key(a[i]) for i in range(50)] != forward
    a.set_epoch(0)
    assert [key(a[i]) for i in range(50)] == forward
    other_seed = Mixture(sources(), MixtureConfig(), seed=4, length=50)
    assert [key(other_seed[i]) for i in range(50)] != forward


def test_task_and_dataset_weights_are_respected():
    cfg = MixtureConfig(dataset_weights={"semantic": {"sem-a": 3, "sem-b": 1}})
    mixture = Mixture(sources(), cfg, seed=0, length=2000)
    samples = [mixture[i] for i in range(len(mixture))]
    tasks = Counter(s.meta.task for s in samples)
    expected = {"semantic": 10 / 19, "referring": 6 / 19, "vqa": 1 / 19, "reasoning": 2 / 19}
    for task, share in expected.items():
        assert abs(tasks[task] / 2000 - share) < 0.04, (task, tasks)
    semantic = Counter(s.meta.source for s in samples if s.meta.task == "semantic")
    assert abs(semantic["sem-a"] / (semantic["sem-a"] + semantic["sem-b"]) - 0.75) < 0.05, semantic


def test_zero_weight_and_missing_sources_are_skipped():
    given = sources()
    del given["toy-vqa"]
    cfg = MixtureConfig(
        task_weights={"semantic": 1, "referring": 0, "vqa": 1, "reasoning": 1},
        dataset_weights={"semantic": {"sem-a": 1, "sem-b": 0, "ade20k": 5}},  # ade20k: known, not given
    )
    mixture = Mixture(given, cfg, seed=0, length=200)
    assert mixture.weights == {"semantic": (1.0, {"sem-a": 1.0}), "reasoning": (1.0, {"toy-reason": 1.0})}
    assert {(s.meta.task, s.meta.source) for s in (mixture[i] for i in range(200))} == {
        ("semantic", "sem-a"),
        ("reasoning", "toy-reason"),
    }


def test_unknown_names_are_errors_listing_known_ones():
    with pytest.raises(ValueError, match=r"task_weights: unknown name\(s\) \['segmentation'\]; known: semantic"):
        Mixture(sources(), MixtureConfig(task_weights={"segmentation": 1}), seed=0, length=1)
    cfg = MixtureConfig(dataset_weights={"semantic": {"ade20kk": 1}})
    with pytest.raises(ValueError, match=r"unknown name\(s\) \['ade20kk'\]; known: .*ade20k"):
        Mixture(sources(), cfg, seed=0, length=1)
    cfg = MixtureConfig(dataset_weights={"semantic": {"toy-vqa": 1}})
    with pytest.raises(ValueError, match="names 'toy-vqa', a vqa source"):
        Mixture(sources(), cfg, seed=0, length=1)
    with pytest.raises(ValueError, match="nothing to sample"):
        Mixture({"toy-vqa": sources()["toy-vqa"]}, MixtureConfig(task_weights={"vqa": 0}), seed=0, length=1)


def test_released_weights_name_known_datasets():
    assert set(RELEASED_DATASET_WEIGHTS["semantic"]) <= set(SOURCES)


def test_records_without_conversations_are_redrawn():
    empty = VQARecord("empty", lambda: IMAGE, ())
    full = VQARecord("full", lambda: IMAGE, (("Hi?", "Hello."),))
    given = {"chat": RecordSource("chat", "vqa", (empty, full))}
    mixture = Mixture(given, MixtureConfig(), seed=0, length=40)
    assert {mixture[i].meta.image_id for i in range(40)} == {"full"}
    with pytest.raises(IndexError):
        mixture[40]


def skewed_source(count: int = 44) -> RecordSource:
    """Class 0 ("wall") is in every other image; each of classes 1..11 fills the rest of one image in 11."""
    names = ("wall", *(f"thing{k}" for k in range(1, 12)))

    def record(i: int) -> SemanticRecord:
        label = np.full((4, 4), 1 + i % 11)
        if i % 2 == 0:
            label[0] = 0
        return SemanticRecord(f"skew-{i}", lambda: IMAGE, lambda: label, names)

    return RecordSource("skew", "semantic", tuple(record(i) for i in range(count)))


def wall_listings(sampling: str) -> Counter:
    cfg = MixtureConfig(task_weights={"semantic": 1.0})
    cfg.tasks.semantic.list_sampling = sampling
    cfg.tasks.semantic.list_length = (1, 6)
    mixture = Mixture({"skew": skewed_source()}, cfg, seed=0, length=600)
    counts = Counter()
    for i in range(len(mixture)):
        meta = mixture[i].meta
        counts["present"] += "wall" in meta.classes_present
        counts["absent"] += "wall" in meta.classes_absent
    return counts


def test_frequency_sampling_asks_a_frequent_class_as_often_absent_as_present():
    freq = Mixture({"skew": skewed_source()}, _frequency_cfg(), seed=0, length=1).frequencies["skew"]
    assert freq[0] == pytest.approx(0.5) and freq[1:] == pytest.approx([4 / 44] * 11)
    first, weighted = wall_listings("present_first"), wall_listings("frequency")
    # present_first lists "wall" whenever it is there, and only by chance when it is not
    assert first["present"] / (first["present"] + first["absent"]) > 0.75
    share = weighted["present"] / (weighted["present"] + weighted["absent"])
    assert 0.4 < share < 0.6, weighted
    assert weighted["present"] == first["present"]  # present classes are still always listed


def _frequency_cfg() -> MixtureConfig:
    cfg = MixtureConfig(task_weights={"semantic": 1.0})
    cfg.tasks.semantic.list_sampling = "frequency"
    return cfg


def test_frequency_sampling_needs_the_class_frequencies():
    record = skewed_source()[0]
    tasks = TasksConfig(semantic=SemanticTaskConfig(list_sampling="frequency"))
    with pytest.raises(ValueError, match="class frequencies"):
        format_record(record, random.Random(0), tasks)
    with pytest.raises(ValueError, match="3 class frequencies for 12 classes"):
        format_record(record, random.Random(0), tasks, frequencies=np.full(3, 0.5))
