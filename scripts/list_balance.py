"""How often is each kind of class listed present, and how often absent, in the semantic training queries?

    python scripts/list_balance.py [--config configs/train/shapeworld-small.yaml] [--n 1500] [--sampling MODE]
        [--confusable W]

Formats the first N ShapeWorld `train` scenes with the config's semantic task settings (seed 0) and counts, for stuff
classes and for colour-shape classes, how many listed classes were present and how many absent. A model that learns
P(`<ins>`) per kind of class first learns these shares as its prior; at inference every class is asked.
`--sampling` (present_first, uniform or frequency) overrides the config's `list_sampling`, `--confusable` its
`confusable_weight`. The absent colour-shape classes are also split by how near they come to the scene: their colour
on another object, only their shape, or neither.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections import Counter

from lasagna.data.tasks_semantic import class_frequencies, format_semantic
from lasagna.shapeworld import STUFF, ShapeWorldSemantic
from lasagna.train.config import load_train_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/train/shapeworld-small.yaml")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--sampling", choices=("present_first", "uniform", "frequency"))
    ap.add_argument("--confusable", type=float)
    args = ap.parse_args()
    task = load_train_config(args.config).data.mixture.tasks.semantic
    if args.sampling:
        task = dataclasses.replace(task, list_sampling=args.sampling)
    if args.confusable is not None:
        task = dataclasses.replace(task, confusable_weight=args.confusable)
    source, rng, counts, near = ShapeWorldSemantic("train"), random.Random(0), Counter(), Counter()
    freq = None
    if task.list_sampling == "frequency":
        freq = class_frequencies(source, task.min_pixels, task.frequency_records)
    for i in range(args.n):
        meta = format_semantic(source[i], rng, task, frequencies=freq).meta
        for listed, present in ((meta.classes_present, True), (meta.classes_absent, False)):
            counts.update(("stuff" if name in STUFF else "colour-shape", present) for name in listed)
        things = [name.split() for name in meta.classes_present if name not in STUFF]
        colours, shapes = {colour for colour, _ in things}, {shape for _, shape in things}
        for name in meta.classes_absent:
            if name not in STUFF:
                colour, shape = name.split()
                near["colour in scene" if colour in colours else "shape only" if shape in shapes else "neither"] += 1
    for kind in ("stuff", "colour-shape"):
        yes, no = counts[kind, True], counts[kind, False]
        print(f"{kind}: listed present {yes}, absent {no} ({yes / max(1, yes + no):.0%} present)")
    absent = sum(counts[kind, False] for kind in ("stuff", "colour-shape"))
    shares = ", ".join(
        f"{kind} {near[kind] / max(1, absent):.0%}" for kind in ("colour in scene", "shape only", "neither")
    )
    print(f"absent listings: colour-shape with {shares}; stuff {counts['stuff', False] / max(1, absent):.0%}")


if __name__ == "__main__":
    main()
