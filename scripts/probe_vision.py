"""Does the vision tower still see the shapes? A linear probe for "a shape of colour C is in the image".

    python scripts/probe_vision.py [--model DIR] [--scenes 300]

For each CLIP layer, pools patch features (max and mean), fits one logistic regression per colour on 220 ShapeWorld
train scenes and reports its accuracy on the rest, next to the majority-class base rate.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from lasagna.api import Lasagna
from lasagna.data.transforms import clip_pixels
from lasagna.shapeworld import COLOURS, scene


def probe(x: torch.Tensor, y: torch.Tensor, train: int) -> tuple[float, float]:
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    w = torch.zeros(x.shape[1], y.shape[1], requires_grad=True)
    b = torch.zeros(y.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x[:train] @ w + b, y[:train])
        (loss + 1e-3 * w.pow(2).sum()).backward()
        opt.step()
    with torch.no_grad():
        acc = ((x[train:] @ w + b > 0).float() == y[train:]).float().mean().item()
    rate = y[train:].mean(0)
    return acc, torch.maximum(rate, 1 - rate).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--scenes", type=int, default=300)
    args = ap.parse_args()
    model = Lasagna.from_pretrained(args.model).model.float()
    feats, labels = [], []
    with torch.no_grad():
        for i in range(args.scenes):
            s = scene("train", i)
            pixels = clip_pixels(np.array(s.image), model.cfg.preprocess)[None]
            hidden = model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
            feats.append([torch.cat([h[0, 1:].max(0).values, h[0, 1:].mean(0)]) for h in hidden])
            colours = {o.colour for o in s.objects}
            labels.append([c in colours for c in COLOURS])
    y = torch.tensor(labels, dtype=torch.float32)
    train = int(args.scenes * 0.73)
    for layer in range(len(feats[0])):
        acc, base = probe(torch.stack([f[layer] for f in feats]), y, train)
        print(f"hidden_states[{layer}]  probe accuracy {acc:.3f}  base rate {base:.3f}")


if __name__ == "__main__":
    main()
