"""Could the presence verifier skip the masks of slots the LLM calls absent? Where its decisions fall, measured.

    python benchmarks/verifier_band.py [--model DIR] [--splits val,test-open] [--scenes 200,500]

A slot needs its mask drawn only if the verifier could still turn it present. `Judges.reach` skips a slot when a
bound on the verifier's log-odds proves it cannot; the embedded model's presence verifier has no finite bound
(`PresenceVerifier.log_odds_range`), so every slot of a class list is drawn. This script asks the looser, empirical
question: on held-out scenes, below which LLM log-odds does the fused decision never come out present? Every slot of
each scene's full class list is drawn and judged (as `lasagna calibrate` does). For each cut-off L it prints the share
of slots below L (whose masks a band starting at L would skip) and how many of them the verifier turned present
(the answers such a band would change).
"""

from __future__ import annotations

import argparse
import warnings

import torch

CUTS = (-9.0, -8.0, -7.5, -7.0, -6.0, -5.0, -4.0, -2.0, 0.0)


def evidence(api, split: str, scenes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) LLM and verifier log-odds of every slot of `scenes` scenes, and (N,) the fused decision."""
    from lasagna.judges.calibrate import collect_evidence
    from lasagna.shapeworld import ShapeWorldSemantic

    ev, _ = collect_evidence(api, ShapeWorldSemantic(split), scenes)
    fusion = api.judges.verifier.fusion
    fused = (ev.float() @ fusion.weight.detach().float().T + fusion.bias.detach().float())[:, 0]
    return ev.float(), fused >= 0


def report(split: str, ev: torch.Tensor, present: torch.Tensor) -> None:
    llm = ev[:, 0]
    flipped_up = (llm < 0) & present
    print(f"\n{split}: {len(llm)} slots, LLM log-odds in [{llm.min():.2f}, {llm.max():.2f}], "
          f"fused present {int(present.sum())}, of which the LLM answered absent {int(flipped_up.sum())}")  # fmt: skip
    if present.any():
        print(f"lowest LLM log-odds of a slot fused present: {llm[present].min():.2f}")
    print(f"{'skip below L':>12} | {'slots skipped':>13} | {'answers changed':>15}")
    for cut in CUTS:
        below = llm < cut
        print(f"{cut:>12.1f} | {float(below.float().mean()):>13.3f} | {int((below & present).sum()):>15}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model)")
    ap.add_argument("--splits", default="val,test-open", help="ShapeWorld splits, comma-separated")
    ap.add_argument("--scenes", default="200,500", help="scenes of each split, comma-separated")
    args = ap.parse_args(argv)
    splits, scenes = args.splits.split(","), [int(n) for n in args.scenes.split(",")]
    if len(splits) != len(scenes):
        ap.error(f"--splits names {len(splits)} splits, --scenes gives {len(scenes)} counts")
    warnings.simplefilter("ignore", UserWarning)
    torch.set_num_threads(1)
    from lasagna.api import Lasagna

    api = Lasagna.from_pretrained(args.model)
    if api.judges is None or api.judges.verifier is None:
        ap.error("this model has no presence verifier: its masks are drawn for present slots only already")
    w = api.judges.verifier.fusion.weight.detach().float()[0]
    print(f"fusion: {float(w[0]):.3f} * LLM + {float(w[1]):.3f} * verifier "
          f"+ {float(api.judges.verifier.fusion.bias.detach().float()):.3f}")  # fmt: skip
    for split, count in zip(splits, scenes, strict=True):
        report(split, *evidence(api, split, count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
