"""The training mixture: a map-style dataset whose item is a pure function of (seed, epoch, index).

Each item draws, from its own `random.Random`, a task by `task_weights`, a dataset of that task by its weight, a
record uniformly, and then formats it. Like the released code it samples with replacement, so `length` (the epoch
length) is free; unlike it, the draw depends on the index and the epoch, so runs, restarts and DataLoader workers
agree on every sample.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lasagna.data.records import Source
from lasagna.data.sources import SOURCES
from lasagna.data.tasks import Sample, TasksConfig, class_frequencies, format_record

TASKS = ("semantic", "referring", "vqa", "reasoning")
RELEASED_DATASET_WEIGHTS: dict[str, dict[str, float]] = {
    # The released code's hard-coded semantic rates, less its openimage 1 (no reader here: its custom annotation
    # file is not public); the other tasks pick their datasets uniformly. Copy into MixtureConfig.dataset_weights.
    "semantic": {"cocostuff": 6.0, "ade20k": 3.0, "mapillary": 2.0, "cityscapes": 2.0},
}
MAX_DRAWS = 16
"""Records that give no conversation (an empty chat, no class with enough pixels) are redrawn this many times."""


@dataclass
class MixtureConfig:
    """Which tasks and datasets feed training, and how each task formats its records.

    task_weights: relative frequency of each task; the paper's 10 : 6 : 1 : 2.
    dataset_weights: per task, {dataset name: weight}. A task without an entry (or with an empty one) uses every
        given source of that task with weight 1; a task with an entry uses exactly the datasets it names. A named
        dataset that was not given is skipped (not downloaded, say); a name that is neither given nor a known
        dataset is an error.
    tasks: the formatting config of each task family.
    """

    task_weights: dict[str, float] = field(
        default_factory=lambda: {"semantic": 10.0, "referring": 6.0, "vqa": 1.0, "reasoning": 2.0}
    )
    dataset_weights: dict[str, dict[str, float]] = field(default_factory=dict)
    tasks: TasksConfig = field(default_factory=TasksConfig)


@dataclass(frozen=True)
class _Task:
    name: str
    weight: float
    datasets: tuple[str, ...]
    dataset_weights: tuple[float, ...]


class Mixture:
    """Map-style dataset of `length` samples drawn from `sources` (name -> Source, grouped by `Source.task`).

    Tasks or datasets with weight 0 or no source are skipped; what remains is in `weights`. Call `set_epoch`
    before each epoch so epochs differ; the sample at `index` depends only on (seed, epoch, index).
    """

    def __init__(self, sources: Mapping[str, Source], cfg: MixtureConfig, seed: int, length: int) -> None:
        if length < 1:
            raise ValueError(f"mixture length must be >= 1, got {length}")
        self.sources = dict(sources)
        self.cfg = cfg
        self.seed = seed
        self.length = length
        self.epoch = 0
        self._tasks = _plan(self.sources, cfg)
        self.frequencies = _frequencies(self.sources, self._tasks, cfg.tasks)

    @property
    def weights(self) -> dict[str, tuple[float, dict[str, float]]]:
        """The effective plan: task -> (task weight, {dataset: weight}), only what can be drawn."""
        return {t.name: (t.weight, dict(zip(t.datasets, t.dataset_weights, strict=True))) for t in self._tasks}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"mixture index {index} out of range [0, {self.length})")
        # A string seed is hashed with SHA-512 by `random`, so it is stable across processes and Python runs.
        rng = random.Random(f"lasagna-mixture/{self.seed}/{self.epoch}/{index}")
        tasks = self._tasks
        for _ in range(MAX_DRAWS):
            task = rng.choices(tasks, weights=[t.weight for t in tasks])[0]
            name = rng.choices(task.datasets, weights=task.dataset_weights)[0]
            source = self.sources[name]
            record = source[rng.randrange(len(source))]
            sample = format_record(
                record, rng, self.cfg.tasks, source=name, frequencies=self.frequencies.get(name), item=index
            )
            if sample.conversations:
                return sample
        raise ValueError(
            f"mixture item {index} (seed {self.seed}, epoch {self.epoch}): {MAX_DRAWS} draws gave records with "
            "nothing to ask; check the sources' records (empty chats, label maps without any class)"
        )


def _plan(sources: dict[str, Source], cfg: MixtureConfig) -> list[_Task]:
    """Check the config against the sources and keep the tasks and datasets that can be drawn."""
    _check_names("task_weights", cfg.task_weights, TASKS)
    _check_names("dataset_weights", cfg.dataset_weights, TASKS)
    by_task: dict[str, list[str]] = {task: [] for task in TASKS}
    for name, source in sources.items():
        if source.task not in by_task:
            raise ValueError(f"source {name!r} has task {source.task!r}; known tasks: {', '.join(TASKS)}")
        if len(source) == 0:
            raise ValueError(f"source {name!r} has no records")
        by_task[source.task].append(name)
    known = set(SOURCES) | set(sources)
    plan = []
    for task in TASKS:
        task_weight = _weight(cfg.task_weights.get(task, 0.0), f"task_weights[{task!r}]")
        mapping = cfg.dataset_weights.get(task) or dict.fromkeys(by_task[task], 1.0)
        _check_names(f"dataset_weights[{task!r}]", mapping, sorted(known))
        for name in mapping:
            if name in sources and sources[name].task != task:
                raise ValueError(f"dataset_weights[{task!r}] names {name!r}, a {sources[name].task} source")
        datasets = [(n, _weight(w, f"dataset_weights[{task!r}][{n!r}]")) for n, w in mapping.items() if n in sources]
        datasets = [(n, w) for n, w in datasets if w > 0]
        if task_weight > 0 and datasets:
            names, weights = zip(*datasets, strict=True)
            plan.append(_Task(task, task_weight, names, weights))
    if not plan:
        given = {name: source.task for name, source in sources.items()}
        raise ValueError(f"nothing to sample: no task has both a positive weight and a source; sources: {given}")
    return plan


def _frequencies(sources: dict[str, Source], plan: list[_Task], cfg: TasksConfig) -> dict[str, np.ndarray]:
    """Class frequencies of each drawable semantic source, counted once here when `list_sampling="frequency"`, so
    every item (and every DataLoader worker) weighs absent classes the same way."""
    semantic = cfg.semantic
    if semantic.list_sampling != "frequency" or semantic.single_class:
        return {}
    names = [name for task in plan if task.name == "semantic" for name in task.datasets]
    return {name: class_frequencies(sources[name], semantic.min_pixels, semantic.frequency_records) for name in names}


def _check_names(what: str, mapping: Mapping[str, object], known) -> None:
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown name(s) {unknown}; known: {', '.join(known)}")


def _weight(value: float, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a number >= 0, got {value!r}")
    return float(value)
