"""Training speed of the mask decoder's paths: a stage-1 step and a stage-0b step, side by side in one run.

    python benchmarks/train_step.py [--config configs/train/shapeworld-small.yaml] [--steps 8] [--rounds 3]

The model is built as `lasagna train` builds it (random weights: speed does not depend on them), with the config's
trainable parts, batch size, bf16 autocast and training mixture. Three ways to run the mask decoder:

(a) image by image, torch's default attention kernels: the decoder called once per image (as before this script);
(b) one call for the prompts of every image in the batch, default kernels;
(c) one call, and on CPU the math attention kernel (`model/sam.py: decoder_attention`), the code as it is.

A stage-1 step is the loop's forward, loss, backward and AdamW step on a batch of the mixture; a stage-0b step is
the decoder pretraining's masks and loss for as many scenes, forward and backward. The variants run in turn on the
same batches, `--rounds` times; it prints the median seconds per step of each and the ratios a/c and b/c.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

import lasagna.model.sam as sam_module
import lasagna.train.decoder as decoder_module
from lasagna.data.shapeworld import classes, scene
from lasagna.losses import lasagna_loss
from lasagna.model.build import configure_trainable
from lasagna.tokens import token_ids
from lasagna.train.config import load_train_config
from lasagna.train.setup import build_model_and_tokenizer, build_training_set

VARIANTS = ("a", "b", "c")


def image_by_image(model):
    """`LasagnaModel.decode_masks` as one decoder call per image (variant a of stage 1)."""

    def decode_masks(images, prompts, prompt_image, resize_sizes, original_sizes):
        out = []
        for i in range(images.sam_embeds.shape[0]):
            mine = prompt_image == i
            low = model.sam.decode(images.sam_embeds[i : i + 1], prompts[mine], images.skips_of(i))
            out.append(model.sam.postprocess(low, resize_sizes[i], original_sizes[i]))
        return out

    return decode_masks


def class_logits_image_by_image(model, table, scenes):
    """Stage 0b's `_class_logits` as one decoder call per scene (variant a of stage 0b)."""
    embeds, skips, resized = decoder_module._embed(model, scenes)
    for i, s in enumerate(scenes):
        present = decoder_module._present(s.semantic, table.shape[0])
        low = model.sam.decode(embeds[i : i + 1], table[present], tuple(x[i : i + 1] for x in skips))
        yield present, model.sam.postprocess(low, resized, s.semantic.shape)


@contextlib.contextmanager
def variant(model, name: str):
    """Patch the model into variant `name` for the duration of the block."""
    kernels, class_logits = sam_module.decoder_attention, decoder_module._class_logits
    if name in ("a", "b"):
        sam_module.decoder_attention = lambda device: contextlib.nullcontext()
    if name == "a":
        model.decode_masks = image_by_image(model)  # an instance attribute, deleted below
        decoder_module._class_logits = class_logits_image_by_image
    try:
        yield
    finally:
        sam_module.decoder_attention, decoder_module._class_logits = kernels, class_logits
        model.__dict__.pop("decode_masks", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/train/shapeworld-small.yaml")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")

    cfg = load_train_config(args.config)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as run_dir:
        model, tokenizer = build_model_and_tokenizer(cfg, Path(run_dir))
    configure_trainable(model, cfg.trainable)
    model.train()
    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    size, batch = cfg.data.image_size, cfg.optim.batch_size
    batches = [collate([dataset[s * batch + j] for j in range(batch)]) for s in range(args.steps)]
    scenes = [[scene("train", s * batch + j, size) for j in range(batch)] for s in range(args.steps)]
    ids = token_ids(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    table = torch.nn.Parameter(torch.randn(len(classes("train")), model.cfg.sam.prompt_dim) * 0.02)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)  # noqa: E731

    def stage1(inputs) -> None:
        with autocast():
            out = model(inputs)
            parts = lasagna_loss(
                out.logits, out.labels, out.mask_logits, inputs.gt_masks, inputs.ignore, cfg.loss, (ids.ins, ids.no_ins)
            )
        parts.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def stage0b(group) -> None:
        with autocast():
            bce, dice, count = decoder_module._mask_losses(model, table, group)
        ((bce + dice) / max(count, 1)).backward()
        model.zero_grad(set_to_none=True)

    def timed(name: str, work, items) -> float:
        with variant(model, name):
            work(items[0])  # warm-up
            started = time.perf_counter()
            for item in items:
                work(item)
        return (time.perf_counter() - started) / len(items)

    print(
        f"config {args.config}; batch {batch}; {args.steps} steps x {args.rounds} rounds; torch threads "
        f"{torch.get_num_threads()}; bf16 {cfg.bf16}"
    )
    print("stage | (a) image by image s | (b) one call s | (c) one call, math kernel s |  a/c |  b/c")
    for label, work, items in (("1", stage1, batches), ("0b", stage0b, scenes)):
        seconds = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                seconds[name].append(timed(name, work, items))
        a, b, c = (statistics.median(seconds[name]) for name in VARIANTS)
        print(f"{label:>5} | {a:20.3f} | {b:14.3f} | {c:27.3f} | {a / c:4.2f} | {b / c:4.2f}", flush=True)


if __name__ == "__main__":
    main()
