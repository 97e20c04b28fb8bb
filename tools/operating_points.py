"""What each verifier's fusion trades, misses against false alarms, as its absent kind is weighed more or less.

    python tools/operating_points.py [--model DIR] [--dataset shapeworld] [--root DIR] [--split val] [--limit 200]
        [--weights 0.5,1,1.5,2,3] [--evidence FILE]

The fusions are fit on held-out scenes by a BCE in which present and absent count alike (`lasagna calibrate`);
`--absent-weight` / `--no-target-weight` weigh the absent kind more. This collects the model's evidence on the first
`--limit` scenes of `--split` once, as `lasagna calibrate` does (each scene's full class list in chunks for the
presence verifier, each referring expression for the query verifier), then fits the fusion again at each weight and
prints what it decides on those same scenes: present recall and absent rejection (for queries: T-acc and N-acc), with
the model's own fusion first. `--evidence FILE` keeps the collected evidence (read if it exists).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lasagna.api import Lasagna
from lasagna.eval.evaluate import open_eval_sources
from lasagna.judges.answers import collect_answers
from lasagna.judges.calibrate import collect_evidence, decision_rates, fit_fusion, query_evidence


def gather(api: Lasagna, sources: dict, limit: int) -> dict[str, torch.Tensor]:
    """{kind_evidence, kind_present} for each verifier the model has ("presence", "query") and `sources` can feed
    (`eval.open_eval_sources`: a semantic source, a referring one)."""
    judges = api.judges
    out = {}
    if judges is not None and judges.verifier is not None and "semantic" in sources:
        out["presence_evidence"], out["presence_present"] = collect_evidence(api, sources["semantic"], limit)
    if judges is not None and judges.query_verifier is not None and "referring" in sources:
        answers = collect_answers(api, sources["referring"], limit)
        out["query_evidence"], out["query_present"] = query_evidence(api, answers), answers.present
    return {k: v.float().contiguous() if k.endswith("evidence") else v.contiguous() for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded model")
    p.add_argument("--dataset", default="shapeworld", help="`lasagna data` names")
    p.add_argument("--root", help="data root (default: $LASAGNA_DATA)")
    p.add_argument("--split", default="val", help="held-out scenes: never the split you report")
    p.add_argument("--limit", type=int, default=200, help="first N scenes of --split (default 200)")
    p.add_argument("--weights", default="0.5,0.75,1,1.25,1.5,2,3,4", help="comma-separated absent weights")
    p.add_argument("--evidence", help="a safetensors file of the collected evidence: read if it exists, else written")
    args = p.parse_args(argv)
    api = Lasagna.from_pretrained(args.model)
    judges = api.judges
    if args.evidence and Path(args.evidence).exists():
        tensors = load_file(args.evidence)
    else:
        tensors = gather(api, open_eval_sources(args.dataset, args.split, args.root), args.limit)
        if not tensors:
            raise SystemExit(f"{args.dataset} {args.split} feeds none of this model's verifiers")
        if args.evidence:
            save_file(tensors, args.evidence)
    names = {"presence": ("recall", "rejection", judges.verifier), "query": ("T-acc", "N-acc", judges.query_verifier)}
    for kind, (hit, reject, verifier) in names.items():
        if f"{kind}_evidence" not in tensors:
            continue
        evidence, present = tensors[f"{kind}_evidence"], tensors[f"{kind}_present"].bool()
        print(f"\n{kind} verifier, {args.split}: {int(present.sum())} present, {int((~present).sum())} absent")
        print(f"| absent weight | LLM / verifier / bias | {hit} | {reject} |\n|---|---|---|---|")
        rows = [("model's", verifier.fusion.weight.detach(), verifier.fusion.bias.detach())]
        rows += [(w, *fit_fusion(evidence, present, float(w))) for w in args.weights.split(",")]
        for label, weight, bias in rows:
            rates = decision_rates(evidence, present, weight, bias)
            fusion = " / ".join(f"{float(v):.2f}" for v in (*weight[0], bias[0]))
            print(f"| {label} | {fusion} | {rates['present_recall']:.4f} | {rates['absent_rejection']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
