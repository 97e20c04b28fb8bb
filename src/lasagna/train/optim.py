"""The optimizer's side of a run: parameter groups, the learning-rate schedule, and the accumulation settings that
the training config (not a launch config) decides."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # why not at run time: the config imports the stages, which import this module
    from .config import TrainConfig


def warmup_linear_decay(warm: int, total: int) -> Callable[[int], float]:
    """LR factor: linear warmup from 0 over `warm` steps, then linear decay to 0 at `total` (the released
    WarmupDecayLR); every training stage uses it."""

    def factor(step: int) -> float:
        if warm and step < warm:
            return step / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
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
