"""Which referring expressions get poor masks? cIoU by kind of expression on ShapeWorld scenes.

    python scripts/refer_kinds.py [--model DIR] [--split test] [--n 80]

Every expression with a target in the first `--n` scenes is asked as `lasagna eval` asks it, and its predicted
masks (their union) are scored against the union of its targets. Kinds follow the generator's templates
(`lasagna/data/shapeworld/referring.py`): relations ("the star left of the red circle"), extremes ("the leftmost
star", "the biggest shape"), plurals ("all the stars", "every red shape") and plain phrases ("the red circle"); plain
and plural phrases are split by what they name: colour and shape, colour only ("the red shape"), shape only, or
nothing ("the shape"). A kind's cIoU is its summed intersection over its summed union.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np

from lasagna.api import Lasagna
from lasagna.data.shapeworld import COLOURS, ShapeWorldReferring

RELATION = re.compile(r" (left of|right of|above|below) ")
EXTREME = re.compile(
    r"^the (leftmost|rightmost|topmost|bottommost|large|biggest|small|smallest) "
    r"|on the (left|right)$|at the (top|bottom)$"
)


def kind(text: str) -> str:
    if RELATION.search(text):
        return "relation"
    if EXTREME.search(text):
        return "extreme"
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
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    source = ShapeWorldReferring(args.split)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # intersection, union, expressions
    for i in range(args.n):
        record = source[i]
        image = record.load_image()
        for expression in record.expressions:
            targets = expression.load_masks()
            if not len(targets):
                continue
            truth = targets.any(0)
            predicted = np.zeros_like(truth)
            for mask in api.segment(image, query=expression.text).masks:
                predicted |= mask
            row = sums[kind(expression.text)]
            row[0] += int((predicted & truth).sum())
            row[1] += int((predicted | truth).sum())
            row[2] += 1
    for name, (inter, union, count) in sorted(sums.items()):
        print(f"{name} (n={count}): cIoU {inter / max(union, 1):.3f}")
    inter, union = sum(r[0] for r in sums.values()), sum(r[1] for r in sums.values())
    print(f"all (n={sum(r[2] for r in sums.values())}): cIoU {inter / max(union, 1):.3f}")


if __name__ == "__main__":
    main()
