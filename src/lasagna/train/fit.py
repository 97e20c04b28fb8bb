"""The main training loop, from a laptop CPU to many GPUs (accelerate: DDP; DeepSpeed through its plugin).

Data is index-addressed: micro-batch g of rank r holds mixture items (g * world + r) * batch + j, and every item is a
pure function of (seed, epoch, index); so a resumed run reads exactly the data the interrupted one would have.
The steps themselves run in `loop.run_steps`; this module says what a step's loss is and what a run does around them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import torch

from ..losses import lasagna_loss, place_ce
from ..model.build import cast_frozen, configure_trainable
from ..tokens import token_ids
from .config import TrainConfig, check_train_config, dump_train_config
from .decoder import DECODER_FILE
from .encoders import ENCODERS_FILE
from .export import export_model
from .loop import StepLog, run_steps
from .optim import check_accumulation, lr_lambda, param_groups
from .setup import RunWeights, build_run, build_training_set, compile_for_training, model_config_of
from .stages import calibrate, evaluate, pretrain, unwrapped
from .state import TrainState, checkpoints, load_training_state, save_training_state
from .zero import PARTITION_GLOB, deepspeed_requested, load_partitions, save_partition, uses_zero

log = logging.getLogger(__name__)


def fit(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train as `cfg` says into `cfg.out_dir` (from its newest checkpoint with `resume`); returns the exported model's
    folder, `out_dir/final`. An out_dir that holds an earlier run's checkpoints is refused without `resume`, or
    with `overwrite` its checkpoints and log are deleted first."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_train_config(cfg)
    _check_out_dir(Path(cfg.out_dir), resume, overwrite)
    # why: unused-parameter detection, since a VQA-only micro-batch gives the mask decoder no gradient
    accelerator = Accelerator(
        # why: without it accelerate never starts a gloo group on CPUs; with it, it ignores DeepSpeed
        cpu=not torch.cuda.is_available() and not deepspeed_requested(),
        mixed_precision="bf16" if cfg.bf16 else "no",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        gradient_accumulation_steps=cfg.optim.grad_accum,
    )
    check_accumulation(accelerator, cfg)
    out = Path(cfg.out_dir)
    if overwrite and accelerator.is_main_process:
        _clear_run(out)
    accelerator.wait_for_everyone()
    torch.manual_seed(cfg.seed)

    if cfg.loss.place_weight and cfg.loss.place_against == "grid" and not model_config_of(cfg).image_grid_code:
        raise ValueError("loss.place_against: grid needs a model with image_grid_code (tools/add_grid_code.py)")

    # why: the tokenizer decides the vocabulary, so it comes before the model (the main process saves it first)
    if accelerator.is_main_process:
        model, tokenizer, judges = build_run(cfg, out)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        model, tokenizer, judges = build_run(cfg, out)
    # why: a model trained from scratch needs encoders and a mask decoder that already work before the LLM learns
    pretrain(cfg, accelerator, model, out)
    counts = configure_trainable(model, cfg.trainable)
    if judges is not None:
        judges.configure_training(cfg.judges.trainable)
    if cfg.frozen_dtype == "bf16":
        cast_frozen(model, torch.bfloat16)  # why: a 7B model's frozen weights are most of its memory
    if cfg.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable()
    if cfg.compile:
        compile_for_training(model)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_train_config(cfg))
        log.info("parameters: %s", counts)

    # why: the model and its judges train as one set of weights, in one optimizer, clipped together
    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    weights = RunWeights(model, judges)
    groups = param_groups(weights, cfg.optim.lr, cfg.optim.lr_scale)
    params = [p for group in groups for p in group["params"]]
    optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    # why: resume restores model, optimizer, scheduler, RNG and (through the step) the data position
    state = TrainState()
    found = checkpoints(out) if resume else []
    zero = uses_zero(accelerator)
    if found:
        state = load_training_state(found[-1], weights, optimizer, scheduler, cfg, zero)
        log.info("resumed from %s", found[-1])
    elif resume:  # why a warning, not an error: a job restarted by a scheduler passes --resume from its first start
        log.warning("--resume: %s holds no checkpoint yet, so this run starts fresh", out / "checkpoints")

    # why: judges with nothing to train stay out of DDP, which refuses a module without gradients
    if judges is not None and any(p.requires_grad for p in judges.parameters()):
        model, judges, optimizer = accelerator.prepare(model, judges, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
        judges = None if judges is None else judges.to(accelerator.device)
    if found and zero:
        load_partitions(found[-1], optimizer, accelerator.num_processes)

    # why: one writer of the log and the bar, the main process; every rank steps, evaluates and saves its part
    accum, world, rank = cfg.optim.grad_accum, accelerator.num_processes, accelerator.process_index
    is_main = accelerator.is_main_process
    metrics_log = (out / "metrics.jsonl").open("a") if is_main else None
    board = _tensorboard(out) if is_main else None
    ids = token_ids(tokenizer)

    def batch_of(step: int, micro: int):
        # why by index: a resumed run reads the micro-batches the interrupted one would have read
        return _micro_batch(dataset, collate, step * accum + micro, cfg.optim.batch_size, rank, world).to(
            accelerator.device
        )

    def loss_of(inputs) -> dict:
        return micro_batch_loss(cfg, accelerator, model, judges, ids, inputs)

    @contextlib.contextmanager
    def micro_context():
        # why: accelerate's accumulation syncs DDP only on the last micro-batch, and tells DeepSpeed where a step ends
        with accelerator.accumulate(model), accelerator.autocast():
            yield

    def postfix(done: StepLog) -> dict[str, str]:
        shown = {k: f"{done.values[k]:.3f}" for k in ("loss", "ce", "bce", "dice")}
        return {**shown, "img_s": f"{cfg.optim.batch_size * accum * world / max(1e-9, done.seconds):.1f}"}

    def after_step(done: StepLog) -> None:
        state.step, state.seconds = done.step, state.seconds + done.seconds
        if is_main and (state.step % cfg.log_every == 0 or state.step == cfg.optim.steps):
            record = {"step": state.step, **done.values, "grad_norm": done.grad_norm, "lr": done.lr}
            _log_record(metrics_log, board, {**record, "seconds": round(state.seconds, 1)})
        # why: periodic validation uses the same evaluation code as `lasagna eval`
        if cfg.eval.every and state.step % cfg.eval.every == 0 and state.step < cfg.optim.steps:
            evaluate(cfg, accelerator, model, judges, tokenizer, state.step, metrics_log)
        if state.step % cfg.save_every == 0 or state.step == cfg.optim.steps:
            _save_checkpoint(out, accelerator, model, judges, optimizer, scheduler, state, cfg)

    model.train()  # why once: evaluation and calibration put the model back in training mode themselves
    run_steps(
        batch_of,
        loss_of,
        params,
        optimizer,
        scheduler,
        steps=cfg.optim.steps,
        start=state.step,
        micro_batches=accum,
        grad_clip=cfg.optim.grad_clip,
        context=micro_context,
        backward=accelerator.backward,  # why: it divides by accum (DeepSpeed's engine does, under DeepSpeed)
        clip=accelerator.clip_grad_norm_,
        desc="train",
        progress=is_main,
        postfix=postfix,
        after_step=after_step,
    )

    # why: the training peak, read before the export's copy of the model adds its own
    peak = torch.cuda.max_memory_allocated(accelerator.device) if accelerator.device.type == "cuda" else None
    calibrate(cfg, accelerator, model, judges, tokenizer, state.step, metrics_log)
    evaluate(cfg, accelerator, model, judges, tokenizer, state.step, metrics_log)
    final = out / "final"
    # why: a cheap cross-rank check that DDP kept every replica identical
    inner, inner_judges = accelerator.unwrap_model(model), unwrapped(accelerator, judges)
    weights = RunWeights(inner, inner_judges)
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in weights.parameters())], dtype=torch.float64)
    checksums = accelerator.gather(checksum.to(accelerator.device)).tolist()
    if is_main:
        export_model(inner, tokenizer, final, cfg.export_dtype, judges=inner_judges)
        record = {"step": state.step, "rank_checksums": checksums}
        if peak is not None:
            record["peak_gpu_gib"] = round(peak / 2**30, 2)
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.close()
    accelerator.wait_for_everyone()
    return final


def _check_out_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """A fresh run may not start among an earlier run's checkpoints: keep_last would prune its own (the old steps
    sort after them) and a later --resume would continue the old run under the new config."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in out_dir and --overwrite deletes it: pass one of them")
    found = checkpoints(out)
    if found and not resume and not overwrite:
        raise FileExistsError(
            f"{out} holds the checkpoints of an earlier run (newest {found[-1].name}): pass --resume to continue "
            "it, --overwrite to delete them and start over, or choose another out_dir"
        )


def _clear_run(out: Path) -> None:
    """What an earlier run in `out` left that a new one would read back or append to (checkpoints, stage 0/0b
    outputs, a fitted tokenizer, the logs), which --overwrite replaces."""
    for folder in ("checkpoints", "tokenizer", "tensorboard"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for name in ("metrics.jsonl", ENCODERS_FILE, DECODER_FILE):
        (out / name).unlink(missing_ok=True)


def micro_batch_loss(cfg: TrainConfig, accelerator, model, judges, ids, inputs) -> dict:
    """One micro-batch's total loss ("loss") and its parts to log: the paper's CE, BCE and Dice, the place loss and
    the judges' losses when the run has them, and the text tokens per conversation before image expansion (the
    ablation's sequence length)."""
    output = model(inputs)
    place = None
    if cfg.loss.place_weight:
        inner = accelerator.unwrap_model(model)
        vision = inner.cfg.vision
        cells = inner.grid_cells() if cfg.loss.place_against == "grid" else None
        # place_ce's grid, and the CLS before it
        grid = (vision.feature_grid, vision.cls_tokens)
        place = place_ce(output.hidden, output.input_ids, ids.ins, inputs.image_index, inputs.gt_masks, *grid, cells)
    decision_ids = (ids.ins, ids.no_ins)
    parts = lasagna_loss(
        output.logits, output.labels, output.mask_logits, inputs.gt_masks, inputs.ignore, cfg.loss, decision_ids, place
    )
    total = parts.total
    presence = query = None
    if judges is not None:
        presence, query = judges(accelerator.unwrap_model(model), output, inputs)
        if presence is not None:
            total = total + cfg.judges.presence_weight * presence
        if query is not None:
            total = total + cfg.judges.query_weight * query
    tokens = float(inputs.attention_mask.sum()) / inputs.attention_mask.shape[0]
    return {
        "loss": total,
        "ce": parts.ce,
        "bce": parts.bce,
        "dice": parts.dice,
        "tokens": tokens,
        "place": parts.place,
        "presence": presence,
        "query": query,
    }


def _micro_batch(dataset, collate, index: int, batch: int, rank: int, world: int):
    """Global micro-batch `index` of this rank: its `batch` items, collated."""
    base = (index * world + rank) * batch
    return collate([dataset[base + j] for j in range(batch)])


def _log_record(metrics_log, board, record: dict) -> None:
    """One step's record into the JSON-lines log and, when there is one, TensorBoard."""
    metrics_log.write(json.dumps(record) + "\n")
    metrics_log.flush()
    if board is not None:
        for key, value in record.items():
            if key != "step":
                board.add_scalar(f"train/{key}", value, record["step"])


def _save_checkpoint(
    out: Path, accelerator, model, judges, optimizer, scheduler, state: TrainState, cfg: TrainConfig
) -> None:
    """Every rank's part of a checkpoint: under ZeRO each first writes its share of the optimizer state, which the
    main process then moves into the checkpoint folder with the rest."""
    zero = uses_zero(accelerator)
    staging = out / "checkpoints" / f".step-{state.step:07d}.zero"
    if zero:
        save_partition(optimizer, staging, accelerator.process_index)
        accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partitions = sorted(staging.glob(PARTITION_GLOB)) if zero else []
        weights = RunWeights(accelerator.unwrap_model(model), unwrapped(accelerator, judges))
        save_training_state(out, weights, optimizer, scheduler, state, cfg, partitions)
        if zero:
            staging.rmdir()
    accelerator.wait_for_everyone()


def _tensorboard(out: Path):
    """A TensorBoard writer when tensorboard is installed (optional); the JSON-lines log is always written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
