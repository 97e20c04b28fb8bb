"""Do a query verifier's inputs hold whether a relation is true? A hand-built rule on them, against its own judgement.

    python scripts/relation_offsets.py --model DIR [--split test] [--n 120]

Every relation ("left of", "above", ...) of the first `--n` ShapeWorld scenes is asked as `lasagna eval` asks it
(free decoding). At the answer's first decision the script reads what the model's query verifier reads
(`model/query_verifier.py`): the centroid of the slot's mask at SAM's cell grid, and where the phrase's last word (the
anchor's name, "the blue square") finds itself among the cells. The rule: how far the mask's centroid lies past that
place in the relation's direction. Printed: the AUC of true relations against false ones for the rule and for the
verifier's own log-odds (0.5 = no signal). A rule far above the verifier means the inputs hold the answer and the
verifier did not learn to read it (model doc, step 35).
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch

from lasagna.api import Lasagna
from lasagna.infer.engine import name_ids
from lasagna.judges.query import cell_places, word_embeddings
from lasagna.shapeworld import ShapeWorldReferring, holds_relation

# the relation's word -> (axis of (x, y), sign): sign * coordinate grows towards the direction
AXES = {"left": (0, -1), "right": (0, 1), "above": (1, -1), "below": (1, 1)}


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    return float(np.mean(positives[:, None] > negatives[None, :])) if len(positives) and len(negatives) else np.nan


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model with a query verifier")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=120)
    args = ap.parse_args()
    engine = Lasagna.from_pretrained(args.model).engine
    verifier = engine.model.query_verifier
    if verifier is None:
        raise SystemExit(f"{args.model} has no query verifier")
    source = ShapeWorldReferring(args.split)
    rows = []
    for i in range(min(args.n, len(source))):
        record = source[i]
        enc, _, _ = engine.encode_image(record.load_image())  # once for all its expressions
        for expression in record.expressions:
            if not holds_relation(expression.text):
                continue
            axis, sign = AXES[re.search(r"\b(left|right|above|below)\b", expression.text).group(1)]
            row = engine.answer_query(enc, expression.text, 64)
            if not row.decisions:
                continue
            low = engine.slot_low_res(enc, [row.decisions[0].hidden])
            words, valid = word_embeddings(
                engine.model.embed_tokens, [torch.tensor(name_ids(row)[0])], verifier.max_words
            )
            judged, scores, weights = verifier._judge(enc.sam_embeds, low, words, valid)
            places = cell_places(*enc.sam_embeds.shape[-2:])[0]
            centroid = (weights[0, :, None] * places).sum(0) / weights[0].sum()
            anchor = scores[0, int(valid[0].sum()) - 1].float().softmax(-1) @ places
            rule = float(sign * (centroid[axis] - anchor[axis]))
            rows.append((len(expression.load_masks()) > 0, rule, float(judged[0])))
    table = np.array(rows)
    true, false = table[table[:, 0] == 1], table[table[:, 0] == 0]
    print(f"relations: {len(true)} true, {len(false)} false (first {args.n} {args.split} scenes)")
    print(f"AUC true vs false, the rule (offset past the anchor's place): {auc(true[:, 1], false[:, 1]):.3f}")
    print(f"AUC true vs false, the verifier's own log-odds: {auc(true[:, 2], false[:, 2]):.3f}")
    print(
        f"the verifier's log-odds, mean (std): true {true[:, 2].mean():.3f} ({true[:, 2].std():.3f}), "
        f"false {false[:, 2].mean():.3f} ({false[:, 2].std():.3f})"
    )


if __name__ == "__main__":
    main()
