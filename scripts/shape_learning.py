"""How fast does one shapeworld-small image encoder learn object shapes? A learning curve, alone on the cores.

    python scripts/shape_learning.py [--encoder sam|vision|cnn] [--steps 400] [--object-weight 1] [--cell-weight 0]
        [--lr 3e-3] [--zero-pos] [--global-attention] [--no-stem]

Trains one encoder from scratch on ShapeWorld `train` scenes (32 per step, seed 0, bf16 autocast, AdamW betas 0.9 /
0.95, 50 warmup steps then linear decay) with up to two heads, and every `--every` steps prints, on the first 64
`val` scenes:

- cell_class: a softmax head on each cell (loss: stage 0's balanced_ce over the 58 training classes), its accuracy on
  the cells a colour-shape class covers more than half of; cell_shape: how often its class has the right shape;
- obj_shape, obj_colour: an object head that names each object's shape (8-way) and colour (8-way) from its features
  averaged over the cells it covers (weighted by its share of each). With `--object-weight 0` it is a probe: it
  trains on detached features and the encoder learns from the cell head alone.

`--encoder cnn` swaps in a small strided, dilated convolutional net with the SAM encoder's 16 x 16 grid, a
reference for how hard the task is; `--zero-pos` starts the SAM encoder's position embedding at zero, as SAM's own
code does, instead of this project's sine-cosine start; `--global-attention` makes its windowed layers global;
`--no-stem` gives both encoders their plain patch convolution instead of the preset's convolutional stem. The final
step also prints the object head's shape confusion matrix.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lasagna.config import preset
from lasagna.model.lasagna import LasagnaModel
from lasagna.model.mllm import vision_features
from lasagna.shapeworld import COLOURS, SHAPES, SPLIT_LENGTHS, classes
from lasagna.train.encoder_heads import balanced_ce, class_fractions, grids, object_weights, pool_objects
from lasagna.train.encoders import shapeworld_batch

MAX_OBJECTS = 8


def conv_net() -> nn.Module:
    """Stride 8 (the SAM grid of a 128-px image), 128 channels, a receptive field wider than the largest shape."""
    layers, width = [], 3
    for out, stride, dilation in ((32, 1, 1), (64, 2, 1), (64, 2, 1), (128, 2, 1), (128, 1, 2), (128, 1, 4)):
        layers += [nn.Conv2d(width, out, 3, stride, padding=dilation, dilation=dilation), nn.GELU()]
        width = out
    return nn.Sequential(*layers, nn.Conv2d(width, 128, 3, padding=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", choices=("sam", "vision", "cnn"), default="sam")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--object-weight", type=float, default=1.0)
    ap.add_argument("--cell-weight", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--zero-pos", action="store_true")
    ap.add_argument("--global-attention", action="store_true")
    ap.add_argument("--no-stem", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = preset("shapeworld-small")
    if args.global_attention:
        cfg.sam.window_size = cfg.sam.embedding_size
    if args.no_stem:
        cfg.vision.conv_stem, cfg.sam.conv_stem = [], []
    model = LasagnaModel(cfg)
    if args.zero_pos:
        torch.nn.init.zeros_(model.sam.image_encoder.pos_embed)
    names = list(classes("train"))
    shape_of = torch.tensor([SHAPES.index(n.split()[1]) if " " in n else -1 for n in names])
    colour_of = torch.tensor([list(COLOURS).index(n.split()[0]) if " " in n else -1 for n in names])
    encoder, features, width, grid = _encoder(args.encoder, model)
    cell_head, object_head = nn.Linear(width, len(names)), nn.Linear(width, len(SHAPES) + len(COLOURS))

    def batch(split: str, indices: list[int]):
        b = shapeworld_batch(split, indices, 128, model)
        labels = torch.full((len(indices), MAX_OBJECTS), -1)
        labels[:, : b["object_classes"].shape[1]] = b["object_classes"]
        known = labels >= 0
        return b, object_weights(b["instances"], grid, MAX_OBJECTS), labels.clamp(min=0), known

    def heads(b, weights, detach_objects: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = features(b).float()
        pooled = pool_objects(f.detach() if detach_objects else f, weights)
        return cell_head(f), object_head(pooled)

    params = [*encoder.parameters(), *cell_head.parameters(), *object_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1, s / 50) * max(0.0, (args.steps - s) / args.steps)
    )
    val = batch("val", list(range(64)))
    rng, started = np.random.default_rng(0), time.perf_counter()
    for step in range(1, args.steps + 1):
        b, weights, labels, known = batch("train", rng.integers(0, SPLIT_LENGTHS["train"], 32).tolist())
        cells, objects = heads(b, weights, detach_objects=not args.object_weight)
        loss = max(args.object_weight, 1.0) * (
            F.cross_entropy(objects[..., : len(SHAPES)][known], shape_of[labels][known])
            + F.cross_entropy(objects[..., len(SHAPES) :][known], colour_of[labels][known])
        )
        if args.cell_weight:
            loss = loss + args.cell_weight * balanced_ce(cells, class_fractions(b["semantic"], len(names), grid))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay.step()
        optimizer.zero_grad()
        if step % args.every == 0 or step == args.steps:
            encoder.eval()
            with torch.no_grad():
                scores = _scores(heads, val, names, shape_of, colour_of, grid, final=step == args.steps)
            encoder.train()
            print(
                f"step {step} {time.perf_counter() - started:.0f}s loss {float(loss.detach()):.3f} {scores}", flush=True
            )


def _encoder(kind: str, model: LasagnaModel):
    """-> (module to train, batch -> (B, cells, width) features, width, grid side)."""
    cfg = model.cfg
    if kind == "cnn":
        net = conv_net()
        return net, lambda b: net(b["sam"]).flatten(2).transpose(1, 2), 128, cfg.sam.embedding_size
    if kind == "sam":
        sam = model.sam.image_encoder
        return (
            sam,
            lambda b: sam(b["sam"]).last_hidden_state.flatten(2).transpose(1, 2),
            cfg.sam.prompt_dim,
            cfg.sam.embedding_size,
        )

    def tower(b):
        f = vision_features(model.vision_tower, cfg.vision, b["clip"])
        return f if cfg.vision.drop_cls else f[:, 1:]

    return model.vision_tower, tower, cfg.vision.hidden_size, grids(model)["vision"]


def _scores(heads, val, names, shape_of, colour_of, grid: int, final: bool) -> str:
    b, weights, labels, known = val
    cells, objects = heads(b, weights, detach_objects=True)
    top, label = class_fractions(b["semantic"], len(names), grid).max(-1)
    thing = (top > 0.5) & (shape_of[label] >= 0)
    predicted = cells.argmax(-1)
    shape_hat = objects[..., : len(SHAPES)].argmax(-1)[known]
    colour_hat = objects[..., len(SHAPES) :].argmax(-1)[known]
    shape, colour = shape_of[labels][known], colour_of[labels][known]
    if final:
        confusion = torch.zeros(len(SHAPES), len(SHAPES), dtype=torch.long)
        confusion.index_put_((shape, shape_hat), torch.ones_like(shape), accumulate=True)
        print("object shape confusion, rows true, columns predicted:", SHAPES, confusion, sep="\n")
    values = {
        "cell_class": (predicted == label)[thing].float().mean(),
        "cell_shape": (shape_of[predicted] == shape_of[label])[thing].float().mean(),
        "obj_shape": (shape_hat == shape).float().mean(),
        "obj_colour": (colour_hat == colour).float().mean(),
    }
    return " ".join(f"{k} {float(v):.3f}" for k, v in values.items())


if __name__ == "__main__":
    main()
