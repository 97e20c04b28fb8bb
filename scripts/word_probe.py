"""Which class-name words can a linear probe read from a model's frozen image encoders, patch by patch?

    python scripts/word_probe.py [--model DIR | --encoders FILE] [--train 384] [--val 64]

For the CLIP tower's patches (the features the LLM reads) and SAM's embedding cells, a logistic regression per word
("red", "circle", "sky", ...) is fitted on `train` scenes and scored on `val` scenes: recall on the patches that word
covers more than half of, threshold 0. Then a softmax probe per encoder names the shape (8-way) and the colour (8-way)
of the patches one shape word, or one colour word, covers more than half of: its `val` accuracy says whether the
features tell shapes apart, which a per-word recall cannot (a head that says "circle" on every coloured patch recalls
every shape). Then the same shape probe on each object's mean feature over the patches it covers (weighted by its share
of each). Last, where: a softmax probe names each patch's column, and its row, of the grid, which relations ("left of")
and extremes ("the topmost") need. `--encoders` probes a stage-0 `encoders.safetensors` in a fresh `shapeworld-small`
model.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lasagna.api import default_model_dir
from lasagna.checkpoint import load_pretrained
from lasagna.model.lasagna import LasagnaModel
from lasagna.model.mllm import vision_features
from lasagna.shapeworld import COLOURS, SHAPES, classes
from lasagna.train.encoder_heads import grids, object_weights, patch_targets, pool_objects, word_matrix
from lasagna.train.encoders import encoders_preset, load_encoders, shapeworld_batch


def encode(model, words, split: str, count: int) -> tuple[dict, dict, dict]:
    """-> per encoder: patch features, their word fractions, and (object-pooled features, object shape ids)."""
    size = model.cfg.preprocess.clip_size
    sides = grids(model)
    feats, targets, objects = ({k: [] for k in sides} for _ in range(3))
    names = classes(split)
    for start in range(0, count, 32):
        batch = shapeworld_batch(split, list(range(start, min(count, start + 32))), size, model)
        with torch.no_grad():
            v = vision_features(model.vision_tower, model.cfg.vision, batch["clip"])
            v = v if model.cfg.vision.drop_cls else v[:, 1:]
            s = model.sam.embed_images(batch["sam"]).flatten(2).transpose(1, 2)
        labels = batch["object_classes"]
        known = labels >= 0
        shape_ids = torch.tensor([SHAPES.index(names[c].split()[-1]) for c in labels[known].tolist()])
        for key, value in (("vision", v), ("sam", s)):
            feats[key].append(value.reshape(-1, value.shape[-1]))
            targets[key].append(patch_targets(batch["semantic"], words, sides[key]).reshape(-1, words.shape[1]))
            pooled = pool_objects(value, object_weights(batch["instances"], sides[key], labels.shape[1]))
            objects[key].append((pooled[known], shape_ids))
    objects = {k: tuple(torch.cat(parts) for parts in zip(*v, strict=True)) for k, v in objects.items()}
    return {k: torch.cat(v) for k, v in feats.items()}, {k: torch.cat(v) for k, v in targets.items()}, objects


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--model", default=None)
    group.add_argument("--encoders", help="a stage-0 encoders.safetensors, probed in a fresh shapeworld-small model")
    ap.add_argument("--train", type=int, default=384)
    ap.add_argument("--val", type=int, default=64)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.encoders:
        model = LasagnaModel(encoders_preset(args.encoders))
        load_encoders(model, args.encoders)
    else:
        model, _ = load_pretrained(args.model or default_model_dir(), dtype=torch.float32)
    model.eval()
    names, words = word_matrix(list(classes("train")))
    x_train, y_train, objects_train = encode(model, words, "train", args.train)
    x_val, y_val, objects_val = encode(model, words, "val", args.val)
    for key in ("vision", "sam"):
        mean, std = x_train[key].mean(0), x_train[key].std(0) + 1e-5
        probe = torch.nn.Linear(x_train[key].shape[1], len(names))
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(300):
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(probe((x_train[key] - mean) / std), y_train[key]).backward()
            opt.step()
        with torch.no_grad():
            predicted = probe((x_val[key] - mean) / std) > 0
        covered = y_val[key] > 0.5
        recall = (predicted & covered).sum(0) / covered.sum(0).clamp(min=1)
        print(key, {w: round(float(r), 2) for w, r in zip(names, recall, strict=True)})
    for group in (SHAPES, COLOURS):
        columns = [names.index(w) for w in group]
        for key in ("vision", "sam"):
            accuracy = identity_probe(x_train[key], y_train[key][:, columns], x_val[key], y_val[key][:, columns])
            print(
                f"{key}: which of {len(columns)} {'shapes' if group is SHAPES else 'colours'}, val accuracy "
                f"{accuracy:.3f} (chance {1 / len(columns):.3f})"
            )
    for key in ("vision", "sam"):
        (xt, yt), (xv, yv) = objects_train[key], objects_val[key]
        accuracy = softmax_probe(xt, yt, xv, yv)
        print(f"{key}: which of {len(SHAPES)} shapes, object-pooled, val accuracy {accuracy:.3f} ({len(yv)} objects)")
    for key, side in grids(model).items():
        cells = torch.arange(side * side)
        for axis, label in (("column", cells % side), ("row", cells // side)):
            yt, yv = label.repeat(len(x_train[key]) // len(cells)), label.repeat(len(x_val[key]) // len(cells))
            accuracy = softmax_probe(x_train[key], yt, x_val[key], yv)
            print(f"{key}: which of {side} {axis}s, val accuracy {accuracy:.3f} (chance {1 / side:.3f})")


def identity_probe(x_train, cover_train, x_val, cover_val) -> float:
    """Softmax probe over the patches one of the words covers more than half of -> val accuracy."""

    def clear(x, cover):
        keep = cover.max(1).values > 0.5
        return x[keep], cover[keep].argmax(1)

    (xt, yt), (xv, yv) = clear(x_train, cover_train), clear(x_val, cover_val)
    return softmax_probe(xt, yt, xv, yv)


def softmax_probe(xt, yt, xv, yv) -> float:
    """Fit a linear softmax on (xt, yt) -> accuracy on (xv, yv)."""
    mean, std = xt.mean(0), xt.std(0) + 1e-5
    probe = torch.nn.Linear(xt.shape[1], int(yt.max()) + 1)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(probe((xt - mean) / std), yt).backward()
        opt.step()
    with torch.no_grad():
        return float((probe((xv - mean) / std).argmax(1) == yv).float().mean())


if __name__ == "__main__":
    main()
