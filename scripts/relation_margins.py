"""Are false relations missed because they are close calls? P(`<no_ins>`) by how far each misses, on ShapeWorld.

    python scripts/relation_margins.py [--model DIR] [--split test] [--n 200]

Every referring expression with a relation ("the star left of the blue square") of the first `--n` scenes is asked as
`lasagna eval` asks it. A relation's offset is how far, in pixels along its axis, the match that comes closest to
satisfying it lies past its anchor (the dataset's `resolve` measures the same way): at least the dataset's margin
(`POSITION_MARGIN` of the image) for a true relation, at most 0 for a false one. False relations are grouped by that
offset; per group it prints how many there are, the mean P(`<no_ins>`) at the answer's decision and how many were
answered `<no_ins>`, then the AUC of false against true relations for false ones that miss by at least the margin
("clear") and by less ("close").
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from no_target_scores import auc

from lasagna.api import Lasagna
from lasagna.shapeworld.referring import _AXES, POSITION_MARGIN, referring_items
from lasagna.shapeworld.scene import scene
from lasagna.shapeworld.sources import ShapeWorldReferring

BINS = (-np.inf, -32.0, -16.0, 0.0)
"""Upper edges of the false relations' offset groups, in pixels, besides the margin's."""


def best_offset(query, objects) -> float:
    """How far past its anchor, along the relation's axis, the head match closest to satisfying it lies."""
    anchor = next(o for o in objects if query.anchor.matches(o))
    axis, sign = _AXES[query.relation]
    return max(
        sign * (o.centroid[axis] - anchor.centroid[axis]) for o in objects if query.head.matches(o) and o is not anchor
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    source = ShapeWorldReferring(args.split)  # checks the split name
    if not 1 <= args.n <= len(source):
        ap.error(f"--n must be in [1, {len(source)}] for {args.split}, got {args.n}")
    api = Lasagna.from_pretrained(args.model)
    size = source.size
    true_p, false_p, false_off = [], [], []
    for i in range(args.n):
        sc = scene(args.split, i, size)
        for item in referring_items(sc):
            if item.query.relation is None:
                continue
            pred = api.segment(sc.image, query=item.text)
            no_ins = 1.0 - pred.scores[0] if pred.scores else float("nan")
            if item.targets:
                true_p.append(no_ins)
            else:
                false_p.append(no_ins)
                false_off.append(best_offset(item.query, sc.objects))
    true_p, false_p, false_off = np.array(true_p), np.array(false_p), np.array(false_off)
    margin = POSITION_MARGIN * size
    undecided = int(np.isnan(true_p).sum() + np.isnan(false_p).sum())
    print(f"{args.split}, first {args.n} scenes: {len(true_p)} true relations, {len(false_p)} false", end="")
    print(f"; margin {margin:g} px; {undecided} answered without a decision, left out")
    print(f"true: mean P(<no_ins>) {np.nanmean(true_p):.3f}, answered <no_ins> {int((true_p > 0.5).sum())}")
    edges = sorted({*BINS, -margin})
    for lo, hi in itertools.pairwise(edges):
        group = (false_off > lo) & (false_off <= hi)
        if group.any():
            p = false_p[group]
            print(
                f"false, offset in ({lo:g}, {hi:g}] px (n={int(group.sum())}): mean P(<no_ins>) {np.nanmean(p):.3f}, "
                f"answered <no_ins> {int((p > 0.5).sum())}"
            )
    clear = false_off <= -margin
    scores = {"all": false_p, f"clear (n={int(clear.sum())})": false_p[clear], "close": false_p[~clear]}
    print("AUC false vs true: " + ", ".join(f"{k} {auc(list(v), list(true_p)):.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
