"""One training loop, from a laptop CPU to many GPUs (accelerate: DDP; DeepSpeed through its plugin).

Data is index-addressed: micro-batch g of rank r holds mixture items (g * world + r) * batch + j, and every item is a
pure function of (seed, epoch, index); so a resumed run reads exactly the data the interrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import write_atomic_dir
from ..checkpoint import CheckpointError, check_keys, read_weights, save_pretrained, save_weights
from ..losses import lasagna_loss, place_ce
from ..model.build import cast_frozen, configure_trainable, merge_lora
from ..tokens import token_ids
from .config import TrainConfig, check_train_config, dump_train_config
from .decoder import DECODER_FILE, load_decoder, pretrain_decoder
from .encoders import ENCODERS_FILE, load_encoders, pretrain_encoders, warmup_linear_decay
from .setup import RunWeights, build_run, build_training_set, compile_for_training, model_config_of
from .zero import PARTITION_GLOB, deepspeed_requested, load_partitions, save_partition, uses_zero

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    step: int = 0
    seconds: float = 0.0


def lr_lambda(cfg: TrainConfig):
    """Linear warmup from 0, then linear decay to 0 at the last step (the released WarmupDecayLR)."""
    return warmup_linear_decay(cfg.optim.warmup_steps, cfg.optim.steps)


def param_groups(model, lr: float, lr_scale: dict[str, float]) -> list[dict]:
    """Trainable parameters as AdamW groups, each at lr x the scale of its longest matching name prefix (else 1).

    The unscaled group, when there is one, comes first, so the lr that the log reports is the base one."""
    prefixes = sorted(lr_scale, key=len, reverse=True)
    groups: dict[float, list] = {1.0: []}
    used = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in prefixes if name == k or name.startswith(k + ".")), None)
        used.add(prefix)
        groups.setdefault(lr_scale.get(prefix, 1.0), []).append(p)
    unmatched = sorted(set(lr_scale) - used)
    if unmatched:
        raise ValueError(f"optim.lr_scale: no trainable parameter name starts with {unmatched}")
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items() if ps]


def check_accumulation(accelerator, cfg: TrainConfig) -> None:
    """The training config decides micro-batch, accumulation and clipping. DeepSpeed reads them from its own config,
    so they are written there where it says `auto`; a launch config that says otherwise is refused by name, since
    DeepSpeed (or accelerate's accumulation) would silently train with its values."""
    optim = cfg.optim
    clashes = []
    if accelerator.gradient_accumulation_steps != optim.grad_accum:
        clashes.append(("gradient_accumulation_steps", accelerator.gradient_accumulation_steps, optim.grad_accum))
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        wanted = {
            "train_micro_batch_size_per_gpu": optim.batch_size,
            "gradient_accumulation_steps": optim.grad_accum,
            "gradient_clipping": optim.grad_clip,
        }
        for key, value in wanted.items():
            have = plugin.deepspeed_config.get(key, "auto")
            if have == "auto":
                plugin.deepspeed_config[key] = value
            elif have != value:
                clashes.append((key, have, value))
    if clashes:
        said = "; ".join(f"{key} {have} where the training config has {want}" for key, have, want in clashes)
        raise ValueError(f"the accelerate launch config sets {said}: leave these to the training config (optim)")


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def _trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def init_fingerprint(folder: str | Path) -> dict:
    """What a trainable-only checkpoint's frozen weights are read back from: the folder, and a digest of its config
    and of its weight files' names and sizes (cheap: a 7B folder is not hashed whole)."""
    root = Path(folder).resolve()
    if not (root / "config.json").exists():
        raise FileNotFoundError(f"init_from {root} is not a checkpoint folder of ours (no config.json)")
    digest = hashlib.sha256((root / "config.json").read_bytes())
    for f in sorted(root.glob("*.safetensors")):
        digest.update(f"{f.name}:{f.stat().st_size}".encode())
    return {"path": str(root), "digest": digest.hexdigest()}


def save_training_state(
    out: Path, model, optimizer, scheduler, state: TrainState, cfg: TrainConfig, partitions: Sequence[Path] = ()
) -> Path:
    """Atomic folder with everything a resume needs; only the newest `cfg.keep_last` are kept.

    With `checkpoint_weights: trainable` it keeps only the trainable tensors and a fingerprint of init_from, where the
    frozen ones come back from (checked on load). Under DeepSpeed ZeRO the optimizer state is the ranks' `partitions`
    (`zero.save_partition`), moved in, instead of `optimizer.pt`.
    """
    tensors = model.state_dict()
    info = {"step": state.step, "seconds": state.seconds, "weights": cfg.checkpoint_weights}
    info["lr_scale"] = cfg.optim.lr_scale
    if cfg.checkpoint_weights == "trainable":
        names = _trainable_names(model)
        tensors = {k: v for k, v in tensors.items() if k in names}
        info["init_from"] = init_fingerprint(cfg.init_from)

    def fill(tmp: Path) -> None:
        save_weights(tensors, tmp)
        if partitions:
            for part in partitions:
                part.rename(tmp / part.name)
        else:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(info))

    path = write_atomic_dir(out / "checkpoints" / f"step-{state.step:07d}", fill, overwrite=True)
    for old in _checkpoints(out)[: -cfg.keep_last]:
        shutil.rmtree(old)
    return path


def _load_checkpoint_weights(path: Path, model, init_from: str | None) -> dict:
    """A checkpoint's weights into `model`, strictly: all of them, or exactly the trainable ones, whose frozen
    complement must come from the same init_from as when they were saved; returns state.json."""
    info = json.loads((path / "state.json").read_text())
    trainable_only = info.get("weights", "full") == "trainable"
    if trainable_only:
        saved = info["init_from"]
        now = init_fingerprint(init_from) if init_from else None
        if now is None or now["digest"] != saved["digest"]:
            raise CheckpointError(
                f"{path} holds only the trainable weights; the frozen ones were {saved['path']} "
                f"(digest {saved['digest'][:12]}), but init_from is now "
                + (f"{now['path']} (digest {now['digest'][:12]})" if now else "unset")
            )
    state = read_weights(path)
    expected = _trainable_names(model) if trainable_only else set(model.state_dict())
    check_keys(expected, set(state), str(path))
    model.load_state_dict(state, strict=not trainable_only)
    return info


def load_training_state(path: Path, model, optimizer, scheduler, cfg: TrainConfig, zero: bool = False) -> TrainState:
    """Weights, optimizer (unless `zero`: DeepSpeed's partitions load after `prepare`, `zero.load_partitions`),
    scheduler and RNG from a checkpoint folder, before `accelerator.prepare`."""
    saved_zero = any(path.glob(PARTITION_GLOB))
    if saved_zero != zero:
        said = ("under DeepSpeed ZeRO", "without DeepSpeed") if saved_zero else ("without DeepSpeed", "under ZeRO")
        raise ValueError(f"{path} was saved {said[0]}; it cannot be resumed {said[1]}: launch it as it was launched")
    info = _load_checkpoint_weights(path, model, cfg.init_from)
    # why: the optimizer's saved groups carry their lrs, so a changed lr_scale would be silently undone
    if info.get("lr_scale", {}) != cfg.optim.lr_scale:
        raise ValueError(
            f"{path} was trained with optim.lr_scale {info.get('lr_scale', {})}, the config now says "
            f"{cfg.optim.lr_scale}: resume with the same, or start a new run"
        )
    if not zero:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return TrainState(step=int(info["step"]), seconds=float(info["seconds"]))


def _batches(dataset, collate, start: int, batch: int, rank: int, world: int):
    """Endless micro-batches from global micro-batch index `start` on."""
    g = start
    while True:
        base = (g * world + rank) * batch
        yield collate([dataset[base + j] for j in range(batch)])
        g += 1


def fit(cfg: TrainConfig, resume: bool = False) -> Path:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_train_config(cfg)
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
    torch.manual_seed(cfg.seed)

    if cfg.loss.place_weight and cfg.loss.place_against == "grid" and not model_config_of(cfg).image_grid_code:
        raise ValueError("loss.place_against: grid needs a model with image_grid_code (tools/add_grid_code.py)")

    # why: the tokenizer decides the vocabulary, so it comes before the model (the main process saves it first)
    if accelerator.is_main_process:
        model, tokenizer, judges = build_run(cfg, out)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        model, tokenizer, judges = build_run(cfg, out)
    if cfg.encoders.from_file:
        load_encoders(model, Path(cfg.encoders.from_file))
    elif cfg.encoders.steps > 0:
        _stage0(cfg, accelerator, model, out)
    if cfg.decoder.from_file:
        load_decoder(model, Path(cfg.decoder.from_file))
    elif cfg.decoder.steps > 0:
        _stage0_decoder(cfg, accelerator, model, out)
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

    dataset, collate = build_training_set(cfg, tokenizer, model.cfg)
    ids = token_ids(tokenizer)
    decision_ids = (ids.ins, ids.no_ins)
    vision = model.cfg.vision
    place_grid = (vision.feature_grid, vision.cls_tokens)  # place_ce's grid, and the CLS before it
    weights = RunWeights(model, judges)
    groups = param_groups(weights, cfg.optim.lr, cfg.optim.lr_scale)
    params = [p for group in groups for p in group["params"]]  # every trainable parameter, clipped together
    optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    # why: resume restores model, optimizer, scheduler, RNG and (through the step) the data position
    state = TrainState()
    found = _checkpoints(out) if resume else []
    zero = uses_zero(accelerator)
    if found:
        state = load_training_state(found[-1], weights, optimizer, scheduler, cfg, zero)
        log.info("resumed from %s", found[-1])

    if judges is not None and any(p.requires_grad for p in judges.parameters()):
        model, judges, optimizer = accelerator.prepare(model, judges, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
        judges = None if judges is None else judges.to(accelerator.device)
    if found and zero:
        load_partitions(found[-1], optimizer, accelerator.num_processes)
    accum, world = cfg.optim.grad_accum, accelerator.num_processes
    batches = _batches(dataset, collate, state.step * accum, cfg.optim.batch_size, accelerator.process_index, world)
    metrics_log = (out / "metrics.jsonl").open("a") if accelerator.is_main_process else None
    board = _tensorboard(out) if accelerator.is_main_process else None
    bar = tqdm(total=cfg.optim.steps, initial=state.step, disable=not accelerator.is_main_process, desc="train")

    while state.step < cfg.optim.steps:
        started = time.perf_counter()
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, "bce": 0.0, "dice": 0.0, "tokens": 0.0}
        # why: accelerate's accumulation syncs DDP only on the last micro-batch, and tells DeepSpeed where a step ends
        for _ in range(accum):
            inputs = next(batches).to(accelerator.device)
            with accelerator.accumulate(model), accelerator.autocast():
                output = model(inputs)
                place = None
                if cfg.loss.place_weight:
                    inner = accelerator.unwrap_model(model)
                    cells = inner.grid_cells() if cfg.loss.place_against == "grid" else None
                    place = place_ce(
                        output.hidden,
                        output.input_ids,
                        ids.ins,
                        inputs.image_index,
                        inputs.gt_masks,
                        *place_grid,
                        cells,
                    )
                parts = lasagna_loss(
                    output.logits,
                    output.labels,
                    output.mask_logits,
                    inputs.gt_masks,
                    inputs.ignore,
                    cfg.loss,
                    decision_ids,
                    place,
                )
                total = parts.total
                presence = query = None
                if judges is not None:
                    presence, query = judges(accelerator.unwrap_model(model), output, inputs)
                    if presence is not None:
                        total = total + cfg.judges.presence_weight * presence
                    if query is not None:
                        total = total + cfg.judges.query_weight * query
                accelerator.backward(total)  # divided by accum there (by DeepSpeed itself under DeepSpeed)
            for name, value in (("loss", total), ("ce", parts.ce), ("bce", parts.bce), ("dice", parts.dice)):
                sums[name] += float(value.detach()) / accum
            for name, value in (("place", parts.place), ("presence", presence), ("query", query)):
                if value is not None:
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / accum
            # text tokens per conversation, before image expansion (the ablation's sequence length)
            sums["tokens"] += float(inputs.attention_mask.sum()) / inputs.attention_mask.shape[0] / accum
        # why: the paper clips at 1.0 before every optimizer step
        grad_norm = accelerator.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.seconds += time.perf_counter() - started

        if accelerator.is_main_process:
            bar.update(1)
            images_per_s = cfg.optim.batch_size * accum * world / max(1e-9, time.perf_counter() - started)
            bar.set_postfix(
                loss=f"{sums['loss']:.3f}",
                ce=f"{sums['ce']:.3f}",
                bce=f"{sums['bce']:.3f}",
                dice=f"{sums['dice']:.3f}",
                img_s=f"{images_per_s:.1f}",
            )
            if state.step % cfg.log_every == 0 or state.step == cfg.optim.steps:
                record = {
                    "step": state.step,
                    **sums,
                    "grad_norm": float(grad_norm),
                    "lr": scheduler.get_last_lr()[0],
                    "seconds": round(state.seconds, 1),
                }
                metrics_log.write(json.dumps(record) + "\n")
                metrics_log.flush()
                if board is not None:
                    for key, value in record.items():
                        if key != "step":
                            board.add_scalar(f"train/{key}", value, state.step)
        # why: periodic validation uses the same evaluation code as `lasagna eval`
        if cfg.eval.every and state.step % cfg.eval.every == 0 and state.step < cfg.optim.steps:
            _evaluate(cfg, accelerator, model, judges, tokenizer, state, metrics_log)
        if state.step % cfg.save_every == 0 or state.step == cfg.optim.steps:
            _save_checkpoint(out, accelerator, model, judges, optimizer, scheduler, state, cfg)
    bar.close()
    # why: the training peak, read before the export's copy of the model adds its own
    peak = torch.cuda.max_memory_allocated(accelerator.device) if accelerator.device.type == "cuda" else None
    _calibrate(cfg, accelerator, model, judges, tokenizer, state, metrics_log)
    _evaluate(cfg, accelerator, model, judges, tokenizer, state, metrics_log)
    final = out / "final"
    # why: a cheap cross-rank check that DDP kept every replica identical
    inner, inner_judges = accelerator.unwrap_model(model), _unwrapped(accelerator, judges)
    weights = RunWeights(inner, inner_judges)
    checksum = torch.tensor([sum(float(p.detach().double().sum()) for p in weights.parameters())], dtype=torch.float64)
    checksums = accelerator.gather(checksum.to(accelerator.device)).tolist()
    if accelerator.is_main_process:
        export_model(inner, tokenizer, final, cfg.export_dtype, judges=inner_judges)
        record = {"step": state.step, "rank_checksums": checksums}
        if peak is not None:
            record["peak_gpu_gib"] = round(peak / 2**30, 2)
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.close()
    accelerator.wait_for_everyone()
    return final


def _unwrapped(accelerator, judges):
    return None if judges is None else accelerator.unwrap_model(judges)


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
        weights = RunWeights(accelerator.unwrap_model(model), _unwrapped(accelerator, judges))
        save_training_state(out, weights, optimizer, scheduler, state, cfg, partitions)
        if zero:
            staging.rmdir()
    accelerator.wait_for_everyone()


def _stage0(cfg: TrainConfig, accelerator, model, out: Path) -> None:
    """Pretrain the image encoders (stage 0), once."""
    size, seed, bf16 = cfg.data.image_size, cfg.seed, cfg.bf16
    run = lambda: pretrain_encoders(model, cfg.encoders, size, seed, out, bf16=bf16)  # noqa: E731
    _pretrain_once(cfg, accelerator, model, out / ENCODERS_FILE, load_encoders, "encoders", run)


def _stage0_decoder(cfg: TrainConfig, accelerator, model, out: Path) -> None:
    """Pretrain SAM's decoder on the frozen encoders (stage 0b), once."""
    size, seed, bf16 = cfg.data.image_size, cfg.seed, cfg.bf16
    run = lambda: pretrain_decoder(model, cfg.decoder, cfg.loss, size, seed, out, bf16=bf16)  # noqa: E731
    _pretrain_once(cfg, accelerator, model, out / DECODER_FILE, load_decoder, "decoder", run)


def _pretrain_once(cfg: TrainConfig, accelerator, model, path: Path, load, section: str, run) -> None:
    """Run a pretraining stage (`run`, which writes `path`) on the main process unless the run folder already holds
    its output (a resume), then load that output on every rank."""
    if cfg.data.dataset != "shapeworld":
        raise ValueError(f"{section}.steps > 0 pretrains on ShapeWorld; set it to 0 for other datasets")
    if accelerator.is_main_process and not path.exists():
        model.to(accelerator.device)
        log.info("%s pretrained: %s", section, run())
    accelerator.wait_for_everyone()
    load(model, path)


def _tensorboard(out: Path):
    """A TensorBoard writer when tensorboard is installed (optional); the JSON-lines log is always written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _calibrate(cfg: TrainConfig, accelerator, model, judges, tokenizer, state: TrainState, metrics_log) -> None:
    """Fit the judges' fusions on the first `calibrate_scenes` of the eval split (`judges/calibrate.py`).

    Every rank fits them on the same scenes, so the replicas stay identical."""
    from ..api import Lasagna
    from ..eval.evaluate import open_eval_sources

    inner, judges = accelerator.unwrap_model(model), _unwrapped(accelerator, judges)
    if judges is None or (judges.verifier is None and judges.query_verifier is None) or cfg.calibrate_scenes <= 0:
        return
    from ..judges.calibrate import calibrate_model

    sources = open_eval_sources(cfg.data.dataset, cfg.eval.split, cfg.data.root)
    inner.eval()
    mixed = accelerator.autocast() if cfg.frozen_dtype == "bf16" else contextlib.nullcontext()
    try:
        with mixed, torch.compiler.set_stance("force_eager"):
            reports = calibrate_model(
                Lasagna(inner, tokenizer, judges), sources, cfg.calibrate_scenes, cfg.eval.chunk_size, False
            )
    except ValueError as e:
        raise ValueError(f"calibrate_scenes: {cfg.data.dataset} {cfg.eval.split}: {e}") from e
    inner.train()
    judges.train()
    for name, report in reports.items():
        key = "calibration" if name == "presence" else f"{name}_calibration"
        if metrics_log is not None:
            metrics_log.write(json.dumps({"step": state.step, key: report}) + "\n")
            metrics_log.flush()
            log.info("step %d %s %s", state.step, key.replace("_", " "), report)


def _evaluate(cfg: TrainConfig, accelerator, model, judges, tokenizer, state: TrainState, metrics_log) -> None:
    from ..api import Lasagna
    from ..eval.evaluate import evaluate_model

    if cfg.data.dataset != "shapeworld" or cfg.eval.limit <= 0:
        return
    inner, judges = accelerator.unwrap_model(model), _unwrapped(accelerator, judges)
    inner.eval()
    # why: bf16 frozen weights beside fp32 trainable ones run only under autocast, as in training
    mixed = accelerator.autocast() if cfg.frozen_dtype == "bf16" else contextlib.nullcontext()
    # why: generation's cached steps would each compile anew (`compile`); evaluation is short, eager is enough
    with mixed, torch.compiler.set_stance("force_eager"):
        report = evaluate_model(
            Lasagna(inner, tokenizer, judges),
            "shapeworld",
            cfg.eval.split,
            limit=cfg.eval.limit,
            chunk_size=cfg.eval.chunk_size,
            rank=accelerator.process_index,
            world=accelerator.num_processes,
            reduce=accelerator.reduce,
            progress=False,
            tasks=("semantic", "referring"),  # why not reasoning: the periodic check stays as cheap as it was
        )
    inner.train()
    if judges is not None:
        judges.train()
    if metrics_log is not None:
        metrics_log.write(json.dumps({"step": state.step, "eval": report}) + "\n")
        metrics_log.flush()
        log.info("step %d eval %s", state.step, report)


def export_model(model, tokenizer, out: Path, dtype: str = "bf16", overwrite: bool = True, judges=None) -> Path:
    """Merge LoRA and write our checkpoint format, with the judges beside the model (a copy: the training model
    keeps its adapters)."""
    import copy

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype not in dtypes:
        raise ValueError(f"export dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    plain = copy.deepcopy(model)
    merge_lora(plain)
    return save_pretrained(plain, tokenizer, out, dtype=dtypes[dtype], overwrite=overwrite, judges=judges)


def export_checkpoint(ckpt: str | Path, out: str | Path, dtype: str = "bf16", overwrite: bool = False) -> Path:
    """A run folder (its newest checkpoint) or one checkpoints/step-N folder -> our checkpoint format."""
    from .config import load_train_config

    ckpt = Path(ckpt)
    run = ckpt if (ckpt / "config.yaml").exists() else ckpt.parent.parent
    if not (run / "config.yaml").exists():
        raise FileNotFoundError(f"{ckpt} is neither a training run folder nor a checkpoints/step-N folder in one")
    step = ckpt if ckpt != run else (_checkpoints(run) or [None])[-1]
    if step is None:
        raise FileNotFoundError(f"{run} has no checkpoints/step-* folder")
    cfg = load_train_config(run / "config.yaml")
    model, tokenizer, judges = build_run(cfg, run)
    configure_trainable(model, cfg.trainable)
    if judges is not None:
        judges.configure_training(cfg.judges.trainable)
    _load_checkpoint_weights(step, RunWeights(model, judges), cfg.init_from)
    return export_model(model, tokenizer, Path(out), dtype, overwrite=overwrite, judges=judges)
