"""Does the model tell present shapes from absent ones? Mean P(<ins>) per group on ShapeWorld scenes.

(For a model with a presence verifier, P(<ins>) is the fused probability that decides: `ClassResult.score`.)

    python scripts/presence_scores.py [--model DIR] [--split val] [--n 6]

Every scene is asked its split's full class list (16-class chunks, the checkpoint's default decoder); the scores of
colour-shape classes and of stuff classes are averaged separately for present and absent ones, and the AUC of
present against absent shapes is printed (0.5 = no signal). Absent shapes are then split by whether their colour and
their shape appear elsewhere in the scene ("red circle" absent, but a red square and a blue circle present): a model
that reads words but does not bind them scores those absent shapes like present ones. Each group also says how many
of its classes were answered `<ins>`. Last, present recall and absent rejection over all classes if a class counted
present at P(`<ins>`) >= t instead of 0.5, for a few t (the scores as decoded at 0.5: a later slot of a chunk saw
the earlier slots' 0.5 decisions).
"""

from __future__ import annotations

import argparse
from itertools import product

import numpy as np

from lasagna.api import Lasagna
from lasagna.data.records import IGNORE_LABEL
from lasagna.shapeworld import STUFF, ShapeWorldSemantic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=6)
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    source = ShapeWorldSemantic(args.split)
    scores: dict[tuple[str, bool], list[float]] = {(g, p): [] for g in ("shape", "stuff") for p in (True, False)}
    # absent shapes by (colour seen elsewhere, shape seen elsewhere)
    parts: dict[tuple[bool, bool], list[float]] = {(c, s): [] for c in (False, True) for s in (False, True)}
    answered = {key: 0 for key in parts}  # how many of each part were answered <ins>
    for i in range(args.n):
        record = source[i]
        classes = list(record.classes)
        gt = record.load_label()
        present = {classes[k] for k in np.unique(gt) if k != IGNORE_LABEL}
        seen = {w for name in present - set(STUFF) for w in name.split()}
        for c in api.segment(record.load_image(), classes=classes, chunk_size=16).classes:
            scores["stuff" if c.name in STUFF else "shape", c.name in present].append(c.score)
            if c.name not in STUFF and c.name not in present:
                colour, shape = c.name.split()
                parts[colour in seen, shape in seen].append(c.score)
                answered[colour in seen, shape in seen] += c.present
    for group in ("shape", "stuff"):
        yes, no = scores[group, True], scores[group, False]
        print(
            f"{group}: mean P(<ins>) present {np.mean(yes):.3f} (n={len(yes)}), absent {np.mean(no):.3f} (n={len(no)})"
        )
    auc = np.mean([a > b for a, b in product(scores["shape", True], scores["shape", False])])
    print(f"shape AUC present vs absent: {auc:.3f}")
    for (colour, shape), values in parts.items():
        where = f"colour {'seen' if colour else 'unseen'}, shape {'seen' if shape else 'unseen'}"
        print(
            f"  absent shapes, {where}: mean P(<ins>) {np.mean(values):.3f}, "
            f"answered <ins> {answered[colour, shape]} of {len(values)}"
        )
    yes = np.array(scores["shape", True] + scores["stuff", True])
    no = np.array(scores["shape", False] + scores["stuff", False])
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        print(f"threshold {t}: present recall {(yes >= t).mean():.3f}, absent rejection {(no < t).mean():.3f}")


if __name__ == "__main__":
    main()
