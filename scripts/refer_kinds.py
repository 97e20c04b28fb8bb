"""Which referring expressions get poor masks? cIoU by kind of expression on ShapeWorld scenes.

    python scripts/refer_kinds.py [--model DIR] [--split test] [--n 80] [--by-word] [--unpicked]

Every expression with a target in the first `--n` scenes is asked as `lasagna eval` asks it, and its predicted
masks (their union) are scored against the union of its targets. Kinds follow the generator's templates
(`lasagna/shapeworld/referring.py`): relations ("the star left of the red circle"), extremes ("the leftmost
star", "the biggest shape"), plurals ("all the stars", "every red shape") and plain phrases ("the red circle"); plain
and plural phrases are split by what they name: colour and shape, colour only ("the red shape"), shape only, or
nothing ("the shape"). `--by-word` splits relations and extremes by their words ("left of", "the topmost"). A kind's
cIoU is its summed intersection over its summed union.

Then which object the masks land on, as the mean share of an object's pixels they cover: for relations, the target and
the anchor ("the red circle" of "the star left of the red circle"); for single-target relations and extremes whose head
phrase also matches other objects, the target and those others. A model that parses the expression covers the target far
more than the rest. For those that mean one of several look-alikes, how strongly the slot's mask logits cover the target
(their 75th percentile over it: under 0 it is missed, between the instance picker's candidate level and 0 the picker can
still take it). `--unpicked` runs the model without its instance picker.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np

from lasagna.api import Lasagna
from lasagna.judges.picker import CANDIDATE
from lasagna.shapeworld import COLOURS, ShapeWorldReferring
from lasagna.shapeworld.referring import referring_items
from lasagna.shapeworld.scene import scene

RELATION = re.compile(r" (left of|right of|above|below) ")
EXTREME = re.compile(
    r"^the (leftmost|rightmost|topmost|bottommost|large|biggest|small|smallest) "
    r"|on the (left|right)$|at the (top|bottom)$"
)


def kind(text: str, by_word: bool = False) -> str:
    if found := RELATION.search(text):
        return f"relation {found.group(1)}" if by_word else "relation"
    if found := EXTREME.search(text):
        return f"extreme {found.group(0).strip()}" if by_word else "extreme"
    words = text.split()
    plural = words[0] in ("all", "every")
    colour = any(c in words for c in COLOURS)
    shape = words[-1] not in ("shape", "shapes")
    named = {(True, True): "colour and shape", (True, False): "colour", (False, True): "shape"}.get(
        (colour, shape), "nothing"
    )
    return f"{'plural' if plural else 'plain'}, {named}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=80)
    ap.add_argument("--by-word", action="store_true", help="split relations and extremes by their words")
    ap.add_argument("--unpicked", action="store_true", help="the model without its instance picker")
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    picker = api.engine.model.instance_picker
    level = float(picker.candidate) if picker is not None else CANDIDATE  # a new picker's, for a model without one
    if args.unpicked:
        api.engine.model.instance_picker = None
    strength = []  # per look-alike pick: the 75th percentile of the slot's logits over the target
    size = ShapeWorldReferring(args.split).size
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # intersection, union, expressions
    covers: dict[tuple[str, str], list] = defaultdict(list)  # (expressions, rival) -> (target, rival) shares
    for i in range(args.n):
        sc = scene(args.split, i, size)
        for item in referring_items(sc):
            if not item.targets:
                continue
            truth = np.isin(sc.instances, item.targets)
            predicted = np.zeros_like(truth)
            pred = api.segment(sc.image, query=item.text)
            for mask in pred.masks:
                predicted |= mask
            row = sums[kind(item.text, args.by_word)]
            row[0] += int((predicted & truth).sum())
            row[1] += int((predicted | truth).sum())
            row[2] += 1
            for name, others in _rivals(item, sc.objects).items():
                rival = np.isin(sc.instances, others)
                share = (predicted & rival).sum() / rival.sum()
                covers[name].append(((predicted & truth).sum() / truth.sum(), share))
                if name[1] == "look-alikes" and len(pred.masks):
                    strength.append(float(np.percentile(pred.logits[0].numpy()[truth], 75)))
    for name, (inter, union, count) in sorted(sums.items()):
        print(f"{name} (n={count}): cIoU {inter / max(union, 1):.3f}")
    inter, union = sum(r[0] for r in sums.values()), sum(r[1] for r in sums.values())
    print(f"all (n={sum(r[2] for r in sums.values())}): cIoU {inter / max(union, 1):.3f}")
    for name, pairs in covers.items():
        target, other = np.array(pairs).T
        print(
            f"{name[0]} (n={len(pairs)}): masks cover {target.mean():.2f} of the target, {other.mean():.2f} of the "
            f"{name[1]}; the target more in {np.mean(target > other):.2f} of them"
        )
    strength = np.array(strength)
    missed = strength < 0
    print(
        f"look-alike picks with a mask (n={len(strength)}): its logits miss the target in {missed.sum()}, of which "
        f"{(missed & (strength > level)).sum()} are above the picker's candidate level {level}"
    )


def _rivals(item, objects) -> dict[tuple[str, str], list[int]]:
    """Objects a misparse would segment: a relation's anchor; for one target picked by a relation or an extreme,
    the other objects its head phrase matches."""
    query, rivals = item.query, {}
    if query.relation is not None:
        rivals["relations", "anchor"] = [o.instance_id for o in objects if query.anchor.matches(o)]
    if len(item.targets) == 1 and (query.relation or query.extreme):
        others = [o.instance_id for o in objects if query.head.matches(o) and o.instance_id not in item.targets]
        if others:
            rivals["relations and extremes that pick one of several look-alikes", "look-alikes"] = others
    return rivals


if __name__ == "__main__":
    main()
