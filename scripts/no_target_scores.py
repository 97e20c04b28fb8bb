"""Does the model tell referring expressions with a target from those without? Scores on ShapeWorld scenes.

    python scripts/no_target_scores.py [--model DIR] [--split test] [--n 80]

Every referring expression of the first `--n` scenes is asked as `lasagna eval` asks it (free decoding). Expressions
are grouped by whether they have a target and whether they hold a relation ("left of", "above", ...). Per group:
how many were answered with a mask (what N-acc counts), the mean P(`<no_ins>`) within {`<ins>`, `<no_ins>`} at the
answer's first decision, the mean probability of "There", the first word of the no-target sentence that models
trained before step 16 of docs/shapeworld-model.md answered with, and the median share of the image that the answers'
masks cover (answers with a mask only). The AUC of no-target against target expressions is printed for both scores
(0.5 = no signal), over all expressions and over those with a relation. With a query verifier (model doc, step 35)
P(`<no_ins>`) is 1 - the fused probability that decides, and the AUCs of the verifier's own log-odds are printed too.
"""

from __future__ import annotations

import argparse
from itertools import product

import numpy as np
import torch

from lasagna.api import Lasagna
from lasagna.infer.decode import _left_pad, _Rows, encode_prefix
from lasagna.infer.engine import query_question
from lasagna.shapeworld import ShapeWorldReferring, holds_relation

OLD_FIRST_WORD = "There"


@torch.no_grad()
def first_word_probability(api: Lasagna, image: np.ndarray, query: str, token: int) -> float:
    """P(`token`) as the first word of the answer to `query`."""
    engine = api.engine
    enc, _, _ = engine.encode_image(image)
    ids = engine._encode(engine._render([(query_question(query), None)]))
    rows = _Rows(engine.model, encode_prefix(engine.model, enc, 0, ids[:-1]), 1)
    _, logits = rows.feed(*_left_pad([ids[-1:]], engine.ids.pad, rows.device))
    return float(logits[0, -1].float().softmax(-1)[token])


def auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative); NaN scores (no decision, or no such word) are left out."""
    pairs = [a > b for a, b in product(positives, negatives) if not (np.isnan(a) or np.isnan(b))]
    return float(np.mean(pairs)) if pairs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=80)
    args = ap.parse_args()
    api = Lasagna.from_pretrained(args.model)
    there = api.tokenizer.get_vocab().get("▁" + OLD_FIRST_WORD)  # None: a tokenizer fitted without that sentence
    source = ShapeWorldReferring(args.split)
    groups: dict[tuple[bool, bool], list[tuple[bool, float, float, float, float]]] = {}
    for i in range(args.n):
        record = source[i]
        image = record.load_image()
        for expression in record.expressions:
            pred = api.segment(image, query=expression.text)
            no_ins = 1.0 - pred.scores[0] if pred.scores else float("nan")
            word = float("nan") if there is None else first_word_probability(api, image, expression.text, there)
            key = (len(expression.load_masks()) > 0, holds_relation(expression.text))
            area = float(np.mean([m.mean() for m in pred.masks])) if pred.masks else float("nan")
            # the verifier's log-odds that the phrase holds, negated so that higher means "no target" as above
            judged = -float(pred.evidence[0, 1]) if pred.evidence is not None and len(pred.evidence) else float("nan")
            groups.setdefault(key, []).append((len(pred.masks) > 0, no_ins, word, area, judged))
    for (target, relation), rows in sorted(groups.items()):
        masked, no_ins, word, area, _ = zip(*rows, strict=True)
        median_area = np.nanmedian(area) if sum(masked) else float("nan")
        print(
            f"{'target' if target else 'no target'}{', relation' if relation else ''} (n={len(rows)}): "
            f"answered with a mask {sum(masked)}, mean P(<no_ins>) {np.nanmean(no_ins):.3f}, "
            f"mean P({OLD_FIRST_WORD}) {np.mean(word):.3f}, median mask share {median_area:.4f}"
        )
    for scope, relations in (("", (False, True)), (", relations only", (True,))):
        nt = [r for (t, rel), rows in groups.items() if not t and rel in relations for r in rows]
        tg = [r for (t, rel), rows in groups.items() if t and rel in relations for r in rows]
        names = [("P(<no_ins>)", 1), (f"P({OLD_FIRST_WORD})", 2)]
        if api.engine.model.query_verifier is not None:
            names.append(("the query verifier's own log-odds", 4))
        for name, k in names:
            print(f"AUC no target vs target{scope}, {name}: {auc([r[k] for r in nt], [r[k] for r in tg]):.3f}")


if __name__ == "__main__":
    main()
