"""Which kinds of expression does the instance picker choose right? On the answers to held-out ShapeWorld scenes.

    python scripts/picker_kinds.py [--model DIR] [--split val] [--n 200] [--show 0]

The model's answers to the expressions of the first `--n` scenes are decoded as `lasagna train-picker` checks a picker
(`lasagna/train/answers.py`). Of the decisions whose expression has a target and whose mask falls in several pieces, one
is picked right when the picker keeps exactly the pieces its targets cover most of; the share is given per kind of
expression (`refer_kinds.kind`: relations, extremes, plurals, plain phrases). Then the weak pieces (drawn wholly under
logit 0, candidates only through the picker's `CANDIDATE`): how many its targets cover, and how many the picker keeps.
`--show N` prints every Nth extreme with its pieces' areas, which of them are meant and the picker's scores.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from refer_kinds import kind

from lasagna.api import Lasagna
from lasagna.judges.answers import collect_answers
from lasagna.judges.picker import piece_masks, piece_peaks, piece_shares
from lasagna.judges.picking import pieces_of
from lasagna.shapeworld import ShapeWorldReferring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--show", type=int, default=0, help="print every Nth extreme (0: none)")
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    model, tokenizer = api.engine.model, api.engine.tokenizer
    if model.instance_picker is None:
        raise SystemExit(f"{args.model or 'the embedded model'} has no instance picker")
    answers = collect_answers(api, ShapeWorldReferring(args.split), args.n)
    picker = model.instance_picker
    pieces = pieces_of(answers, picker)
    with torch.no_grad():
        embeds, low_res, words, valid = answers.inputs(pieces.index, model.embed_tokens, picker.max_words)
        labelled = pieces.pieces.long()
        scores = picker.score(embeds, low_res, labelled, words, valid)
    meant = piece_shares(labelled, answers.targets[pieces.index].float()) >= 0.5
    areas = piece_masks(labelled).sum((2, 3))
    right: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    extremes = 0
    for i, decision in enumerate(pieces.index.tolist()):
        text = tokenizer.decode(answers.names[decision].tolist()).strip()
        name = kind(text).split(",")[0]
        real = torch.isfinite(scores[i])
        right[name][0] += bool(((scores[i] >= 0) == meant[i])[real].all())
        right[name][1] += 1
        if name == "extreme" and args.show and extremes % args.show == 0:
            shown = [round(s, 1) for s in scores[i][real].tolist()]
            print(f"{text}: areas {areas[i][real].tolist()}, meant {meant[i][real].int().tolist()}, scores {shown}")
        extremes += name == "extreme"
    for name, (good, count) in sorted(right.items()):
        print(f"{name} (n={count}): picked right {good / count:.3f}")
    total = sum(r[1] for r in right.values())
    print(f"all (n={total}): picked right {sum(r[0] for r in right.values()) / max(total, 1):.3f}")
    real = torch.isfinite(scores)
    weak = real & (piece_peaks(low_res, labelled) < 0)  # drawn wholly under 0: a candidate only through `candidate`
    for name, chosen in (("meant", weak & meant), ("not meant", weak & ~meant)):
        kept = int((scores[chosen] >= 0).sum())
        print(f"weak pieces (all under logit 0), {name}: {int(chosen.sum())}, kept {kept}")


if __name__ == "__main__":
    main()
