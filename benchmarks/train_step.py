"""Training speed: a step of each stage as it was before against the code as it is, side by side in one run.

    python benchmarks/train_step.py [--config configs/train/shapeworld-small.yaml] [--steps 8] [--rounds 3]

The model is built as `lasagna train` builds it (random weights: speed does not depend on them), with the config's
batch sizes, bf16 autocast, trainable parts and training mixture. Three variants:

(a) before: the mask decoder called once per image, torch's default attention kernels in it, and stage 0's patch
    targets pooled from a one-hot map of the whole batch;
(b) the decoder called once for the prompts of every image, default kernels (stages 1 and 0b only);
(c) the code as it is: one decoder call, on CPU the math attention kernel (`model/sam.py: decoder_attention`), and
    stage 0's targets counted (`train/encoder_heads.py: cell_shares`);
(d) (c) with `compile: true`: the LLM's decoder and the mask decoder compiled (`train/setup.py: compile_for_training`;
    stage 1 only, the first round's first pass over the batches is left untimed, it compiles).

A stage-0 step is the encoders' pretraining step (forward, targets, loss, backward, AdamW) on the config's
`encoders.batch_size` scenes; a stage-0b step the decoder pretraining's masks and loss for `optim.batch_size` scenes,
forward and backward; a stage-1 step the loop's forward, loss, backward and AdamW on a batch of the mixture. The
variants run in turn on the same batches, `--rounds` times; it prints the median seconds per step and a/c, b/c,
c/d.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import lasagna.model.sam as sam_module
import lasagna.train.decoder as decoder_module
import lasagna.train.encoder_heads as heads_module
import lasagna.train.encoders as encoders_module
from lasagna.losses import lasagna_loss
from lasagna.model.build import configure_trainable
from lasagna.shapeworld import classes, scene
from lasagna.tokens import token_ids
from lasagna.train.config import load_train_config
from lasagna.train.loop import step_optimizer
from lasagna.train.setup import build_model_and_tokenizer, build_training_set, compile_for_training


def image_by_image(model):
    """`LasagnaModel.decode_masks` as one decoder call per image (variant a of stage 1)."""

    def decode_masks(images, prompts, prompt_image, resize_sizes, original_sizes):
        out = []
        for i in range(images.sam_embeds.shape[0]):
            low = model.sam.decode(images.sam_embeds[i : i + 1], prompts[prompt_image == i], images.skips_of(i))
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


def one_hot_pooled(labels: torch.Tensor, count: int, grid: int) -> torch.Tensor:
    """`cell_shares` as stage 0 computed it before (variant a of stage 0)."""
    one_hot = F.one_hot(labels, count).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, grid).flatten(2).transpose(1, 2)


@contextlib.contextmanager
def variant(model, name: str):
    """Patch the code into variant `name` for the duration of the block; only (d) runs compiled code."""
    saved = (sam_module.decoder_attention, decoder_module._class_logits, heads_module.cell_shares)
    if name in ("a", "b"):
        sam_module.decoder_attention = lambda device: contextlib.nullcontext()
    if name == "a":
        model.decode_masks = image_by_image(model)  # an instance attribute, deleted below
        decoder_module._class_logits = class_logits_image_by_image
        heads_module.cell_shares = one_hot_pooled
    try:
        with torch.compiler.set_stance("default" if name == "d" else "force_eager"):
            yield
    finally:
        sam_module.decoder_attention, decoder_module._class_logits, heads_module.cell_shares = saved
        model.__dict__.pop("decode_masks", None)


def stage0_work(model, cfg, steps: int):
    """(the step function, its inputs) for stage 0, as `encoders._pretrain` runs it."""
    enc, e = cfg.encoders, heads_module
    words_list, words = e.word_matrix(list(classes("train")))
    heads = e.EncoderHeads(model, words.shape[0], len(words_list), enc.patch_classes, enc.patch_ce, enc.object_ce)
    encoders = [model.vision_tower, model.sam.image_encoder]
    params = [p for m in (*encoders, heads) for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for module in encoders:
        module.train().requires_grad_(True)
    rng = np.random.default_rng(cfg.seed)
    size = cfg.data.image_size
    batches = [encoders_module.shapeworld_batch("train", rng.integers(0, 1000, enc.batch_size).tolist(), size, model)]
    batches *= steps  # one batch: scene drawing is the same in every variant, so it is left out

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = e.head_logits(model, heads, batch)
        targets = e.head_targets(model, batch, words, enc.patch_classes, enc.patch_ce)
        loss = sum(e.head_loss(k, v.float(), targets[k]) for k, v in logits.items())
        loss.backward()
        step_optimizer(params, optimizer, scheduler)

    return step, batches


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
    print(
        f"config {args.config}; {args.steps} steps x {args.rounds} rounds; torch threads {torch.get_num_threads()}; "
        f"bf16 {cfg.bf16}"
    )
    print("stage | scenes | (a) before s | (b) one decoder call s | (c) now s | (d) compiled s |  a/c |  b/c |  c/d")

    def row(label: str, count: int, work, items, names) -> None:
        seconds = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in names:
                with variant(model, name):
                    # why: (d) compiles anew for each new shape, so its first round first meets them all untimed
                    for item in items if name == "d" and round_ == 0 else items[:1]:
                        work(item)
                    started = time.perf_counter()
                    for item in items:
                        work(item)
                seconds[name].append((time.perf_counter() - started) / len(items))
        med = {name: statistics.median(v) for name, v in seconds.items()}
        cell = lambda name, width: f"{med[name]:{width}.3f}" if name in med else f"{'-':>{width}}"  # noqa: E731
        ratio = lambda x, y: f"{med[x] / med[y]:4.2f}" if x in med and y in med else f"{'-':>4}"  # noqa: E731
        print(
            f"{label:>5} | {count:6d} | {cell('a', 12)} | {cell('b', 22)} | {cell('c', 9)} | {cell('d', 14)} | "
            f"{ratio('a', 'c')} | {ratio('b', 'c')} | {ratio('c', 'd')}",
            flush=True,
        )

    row("0", cfg.encoders.batch_size, *stage0_work(model, cfg, args.steps), ("a", "c"))

    configure_trainable(model, cfg.trainable)  # stage 0 trained the encoders; 0b and 1 keep them frozen
    model.train()
    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    size, batch = cfg.data.image_size, cfg.optim.batch_size
    ids = token_ids(tokenizer)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    table = torch.nn.Parameter(torch.randn(len(classes("train")), model.cfg.sam.prompt_dim) * 0.02)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)  # noqa: E731

    def stage0b(group) -> None:
        with autocast():
            bce, dice, count = decoder_module._mask_losses(model, table, group)
        ((bce + dice) / max(count, 1)).backward()
        model.zero_grad(set_to_none=True)

    def stage1(inputs) -> None:
        with autocast():
            out = model(inputs)
            parts = lasagna_loss(
                out.logits, out.labels, out.mask_logits, inputs.gt_masks, inputs.ignore, cfg.loss, (ids.ins, ids.no_ins)
            )
        parts.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    scenes = [[scene("train", s * batch + j, size) for j in range(batch)] for s in range(args.steps)]
    row("0b", batch, stage0b, scenes, ("a", "b", "c"))
    batches = [collate([dataset[s * batch + j] for j in range(batch)]) for s in range(args.steps)]
    compile_for_training(model)  # in place; every variant but (d) runs it eager
    row("1", batch, stage1, batches, ("a", "b", "c", "d"))


if __name__ == "__main__":
    main()
