"""How are the ShapeWorld referring expressions split between kinds, with and without a target?

    python scripts/refer_balance.py [--split train] [--n 1000] [--no-target-rate R] [--twins]

Generates the expressions of the first N scenes (`lasagna/shapeworld/referring.py`, at `--no-target-rate`, the
dataset's 0.15 by default, as `data.refer_no_target_rate` sets it for training) and counts them by kind (relation,
extreme, plural, plain) and by whether they have a target. A relation without a target is a false relation ("the
star left of the red circle" where no star is); the other no-target kinds name something absent. `--twins` adds each
relation's and extreme's opposite, as `data.refer_twins` does (model doc, step 29).
"""

from __future__ import annotations

import argparse
from collections import Counter

from lasagna.shapeworld.referring import NO_TARGET_RATE, RefQuery, referring_items
from lasagna.shapeworld.scene import scene


def query_kind(query: RefQuery) -> str:
    if query.relation is not None:
        return "relation"
    if query.extreme is not None:
        return "extreme"
    return "plural" if query.plural else "plain"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="train")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--no-target-rate", type=float, default=NO_TARGET_RATE)
    ap.add_argument("--twins", action="store_true", help="with each relation's and extreme's opposite")
    args = ap.parse_args()
    counts: Counter[tuple[str, bool]] = Counter()
    for index in range(args.n):
        for item in referring_items(scene(args.split, index), no_target_rate=args.no_target_rate, twins=args.twins):
            counts[query_kind(item.query), bool(item.targets)] += 1
    total = sum(counts.values())
    for name in ("relation", "extreme", "plural", "plain"):
        with_target, without = counts[name, True], counts[name, False]
        share = without / (with_target + without) if with_target + without else float("nan")
        print(
            f"{name}: {with_target} with a target, {without} without ({without / total:.3f} of all expressions, "
            f"{share:.2f} of this kind)"
        )
    print(f"all: {total} expressions, {sum(v for (_, t), v in counts.items() if not t) / total:.3f} without a target")


if __name__ == "__main__":
    main()
