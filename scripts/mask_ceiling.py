"""How good can ShapeWorld masks get from frozen stage-0 encoders? Two ceilings, without the LLM.

    python scripts/mask_ceiling.py --grid                          # pooled ground truth at 16, 32 and 64 cells
    python scripts/mask_ceiling.py --encoders FILE [--stem-skips] [--steps 1500]

`--grid`: each colour-shape class of the first `--n` `test` scenes, average-pooled to a g x g grid, upsampled back
bilinearly and cut at 0.5, against its own mask: the best IoU a mask drawn from a g x g grid can reach without
sub-cell detail (SAM's decoder reads shapeworld-small's 16 x 16 embedding and draws 64 x 64 logits from it).

`--encoders`: a fresh SAM prompt encoder and mask decoder on the frozen SAM encoder of a stage-0 file, prompted by a
learned embedding per class instead of the LLM's hidden state, so the prompt always names the right class. They
train on all present classes of `train` scenes with the recipe's mask loss (2 BCE + 0.5 Dice, AdamW lr 1e-3, 100
warmup steps then linear decay); the script then prints present-only IoU on the first `--n` `test` scenes for stuff
and for colour-shape classes, the latter split by whether another object shares the colour (as
`scripts/mask_errors.py`). `--stem-skips` adds the stem's finer maps to the decoder's upscaling (`sam.stem_skips`).
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from lasagna.data.shapeworld import SPLIT_LENGTHS, STUFF, classes, scene
from lasagna.data.transforms import sam_pixels
from lasagna.losses import mask_bce_sum, mask_dice_sum
from lasagna.model.lasagna import LasagnaModel
from lasagna.train.encoders import encoders_preset, load_encoders, warmup_linear_decay

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


def build(path: str, stem_skips: bool) -> LasagnaModel:
    cfg = encoders_preset(path)
    cfg.sam.stem_skips = stem_skips
    model = LasagnaModel(cfg)
    load_encoders(model, path)
    return model


def encode(model: LasagnaModel, split: str, indices: list[int]):
    scenes = [scene(split, i, SIZE) for i in indices]
    pixels = torch.stack([sam_pixels(s.image, model.cfg.preprocess)[0] for s in scenes])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        embeds, skips = model.sam.embed_images(pixels).float(), model.sam.skip_maps(pixels)
    return scenes, embeds, tuple(s.float() for s in skips)


def masks(model: LasagnaModel, prompts: torch.Tensor, embeds, skips, i: int) -> torch.Tensor:
    low = model.sam.decode(embeds[i : i + 1], prompts, tuple(s[i : i + 1] for s in skips))
    return model.sam.postprocess(low, (SIZE, SIZE), (SIZE, SIZE))


def present(label: np.ndarray, count: int) -> list[int]:
    return [int(k) for k in np.unique(label) if k < count]


def train(model: LasagnaModel, table: torch.nn.Parameter, steps: int, batch: int) -> None:
    sam = model.sam
    params = [table, *sam.mask_decoder.parameters(), *sam.prompt_encoder.parameters()]
    params += list(sam.stem_skips.parameters()) if sam.stem_skips is not None else []
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_linear_decay(100, steps))
    rng, start = random.Random(0), time.time()
    for step in range(steps):
        scenes, embeds, skips = encode(model, "train", [rng.randrange(SPLIT_LENGTHS["train"]) for _ in range(batch)])
        total, count = 0.0, 0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for i, s in enumerate(scenes):
                ids = present(s.semantic, table.shape[0])
                truth = torch.from_numpy(np.stack([s.semantic == k for k in ids]))
                logits = masks(model, table[ids], embeds, skips, i)
                total = total + 2.0 * mask_bce_sum(logits, truth, None) + 0.5 * mask_dice_sum(logits, truth, None)
                count += len(ids)
        opt.zero_grad()
        (total / count).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step}: loss {total.item() / count:.3f} ({time.time() - start:.0f} s)", flush=True)


def evaluate(model: LasagnaModel, table: torch.Tensor, n: int) -> None:
    names = classes("test")
    rows: dict[str, list[float]] = {"stuff": [], "colour-shape": [], "  alone in its colour": [], "  colour shared": []}
    for i in range(n):
        scenes, embeds, skips = encode(model, "test", [i])
        label = scenes[0].semantic
        ids = present(label, table.shape[0])
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            predicted = masks(model, table[ids], embeds, skips, 0).float() > 0
        colours = [names[k].split()[0] for k in ids if names[k] not in STUFF]
        for k, mask in zip(ids, predicted, strict=True):
            truth = torch.from_numpy(label == k)
            iou = ((mask & truth).sum() / (mask | truth).sum().clamp(min=1)).item()
            if names[k] in STUFF:
                rows["stuff"].append(iou)
                continue
            rows["colour-shape"].append(iou)
            shared = colours.count(names[k].split()[0]) > 1
            rows["  colour shared" if shared else "  alone in its colour"].append(iou)
    for key, values in rows.items():
        print(f"{key} (n={len(values)}): present-only IoU {np.mean(values):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--encoders")
    ap.add_argument("--stem-skips", action="store_true")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    if args.grid:
        grid_ceiling(args.n)
    if args.encoders:
        torch.manual_seed(0)
        model = build(args.encoders, args.stem_skips)
        model.requires_grad_(False)
        model.sam.mask_decoder.requires_grad_(True)
        model.sam.prompt_encoder.requires_grad_(True)
        if model.sam.stem_skips is not None:
            model.sam.stem_skips.requires_grad_(True)
        table = torch.nn.Parameter(torch.randn(len(classes("train")), model.cfg.sam.prompt_dim) * 0.02)
        train(model, table, args.steps, args.batch)
        evaluate(model, table.detach(), args.n)
    if not (args.grid or args.encoders):
        ap.error("nothing to do: give --grid and/or --encoders FILE")


if __name__ == "__main__":
    main()
