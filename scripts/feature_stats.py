"""How the image tokens look to the LLM: norms and how alike they are, before and after the projector.

    python scripts/feature_stats.py [--model DIR] [--n 16]

Over the patch tokens of `n` ShapeWorld `val` scenes: mean token norm, norm of the mean token (the direction all
tokens share), mean norm of what is left, and the mean cosine between tokens; plus the mean norm of the LLM's token
embeddings for comparison.
"""

from __future__ import annotations

import argparse

import torch

from lasagna.api import default_model_dir
from lasagna.checkpoint import load_pretrained
from lasagna.data.transforms import clip_pixels
from lasagna.model.mllm import vision_features
from lasagna.shapeworld import scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    model, _ = load_pretrained(args.model or default_model_dir(), dtype=torch.float32)
    size = model.cfg.preprocess.clip_size
    pixels = torch.stack([clip_pixels(scene("val", i, size).image, model.cfg.preprocess) for i in range(args.n)])
    with torch.no_grad():
        feats = vision_features(model.vision_tower, model.cfg.vision, pixels)
        projected = model.projector(feats)
    for name, tokens in (("features", feats), ("projected", projected)):
        t = tokens.reshape(-1, tokens.shape[-1])
        mean = t.mean(0)
        unit = torch.nn.functional.normalize(t, dim=-1)
        print(
            f"{name}: token norm {t.norm(dim=-1).mean():.2f}, shared direction {mean.norm():.2f}, "
            f"rest {(t - mean).norm(dim=-1).mean():.2f}, mean cosine {(unit @ unit.T).mean():.3f}"
        )
    print(f"text embeddings: norm {model.embed_tokens.weight.norm(dim=-1).mean():.3f}")


if __name__ == "__main__":
    main()
