"""How good can ShapeWorld masks get from frozen stage-0 encoders? Two ceilings, without the LLM.

    python scripts/mask_ceiling.py --grid                          # pooled ground truth at 16, 32 and 64 cells
    python scripts/mask_ceiling.py --encoders FILE [--stem-skips] [--steps 1500] [--seed 0] [--out DIR]

`--grid`: each colour-shape class of the first `--n` `test` scenes, average-pooled to a g x g grid, upsampled back
bilinearly and cut at 0.5, against its own mask: the best IoU a mask drawn from a g x g grid can reach without
sub-cell detail (SAM's decoder reads shapeworld-small's 16 x 16 embedding and draws 64 x 64 logits from it).

`--encoders`: stage 0b (`lasagna/train/decoder.py`) alone, on the frozen encoders of FILE: a stage-0 file, or a whole
checkpoint's `model.safetensors` (the embedded model's, say). A fresh SAM prompt encoder and mask decoder (seeded by
`--seed`, as `lasagna train` seeds them) learn, with a learned prompt per class instead of the LLM's hidden state, to
draw every present class of `train` scenes; the script prints stage 0b's summary: present-only IoU on the first 40
`val` scenes for stuff and for colour-shape classes, the latter split by whether another object shares the colour.
`--stem-skips` adds the stem's finer maps to the decoder's upscaling (`sam.stem_skips`); `--out DIR` keeps the
decoder as DIR/decoder.safetensors, which `decoder.from_file` (or a copy into a run folder) reuses.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from lasagna.losses import LossConfig
from lasagna.model.lasagna import LasagnaModel
from lasagna.shapeworld import STUFF, classes, scene
from lasagna.train.decoder import DecoderPretrainConfig, pretrain_decoder
from lasagna.train.encoders import encoders_preset, load_encoders

SIZE = 128


def grid_ceiling(n: int) -> None:
    names, ious = classes("test"), {16: [], 32: [], 64: []}
    for i in range(n):
        label = scene("test", i, SIZE).semantic
        for k in np.unique(label):
            if k >= len(names) or names[k] in STUFF:
                continue
            truth = torch.from_numpy(label == k)[None, None]
            for g, out in ious.items():
                pooled = F.adaptive_avg_pool2d(truth.float(), g)
                mask = F.interpolate(pooled, (SIZE, SIZE), mode="bilinear", align_corners=False) > 0.5
                out.append(((mask & truth).sum() / (mask | truth).sum()).item())
    for g, out in ious.items():
        print(f"{g} x {g} grid: colour-shape IoU ceiling {np.mean(out):.3f} (n={len(out)})")


def decoder_ceiling(path: str, stem_skips: bool, steps: int, seed: int, out: str | None) -> None:
    cfg = encoders_preset(path)
    cfg.sam.stem_skips = stem_skips
    model = LasagnaModel(cfg, seed=seed)
    load_encoders(model, path)
    loss = LossConfig()  # stage 1's mask loss: 2 BCE + 0.5 Dice
    summary = pretrain_decoder(model, DecoderPretrainConfig(steps=steps), loss, SIZE, seed, out)
    print(json.dumps(summary, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--encoders")
    ap.add_argument("--stem-skips", action="store_true")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="folder for decoder.safetensors and decoder.json")
    ap.add_argument("--n", type=int, default=40, help="test scenes of --grid")
    args = ap.parse_args()
    if args.grid:
        grid_ceiling(args.n)
    if args.encoders:
        decoder_ceiling(args.encoders, args.stem_skips, args.steps, args.seed, args.out)
    if not (args.grid or args.encoders):
        ap.error("nothing to do: give --grid and/or --encoders FILE")


if __name__ == "__main__":
    main()
