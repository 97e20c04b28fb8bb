"""The one optimizer-step loop: the main fit and the two pretraining stages all run their steps here.

A stage gives how to draw a micro-batch and the loss of one, the parameters it trains and their optimizer and
schedule; the loop owns what happens around them, in this order: for each micro-batch its batch, then its loss and
backward, then clipping, the optimizer and schedule steps, the progress bar, and the stage's hook (logging,
evaluation, checkpoints). A run under accelerate passes accelerate's backward, clipping and per-micro-batch context
(accumulation, autocast) in place of torch's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import torch
from tqdm.auto import tqdm

Loss = torch.Tensor | Mapping[str, "torch.Tensor | float | None"]
"""A micro-batch's loss, or a mapping whose "loss" entry is that loss and whose other entries are values to log beside
it (None: none in this micro-batch)."""

B = TypeVar("B")


@dataclass
class StepLog:
    """One optimizer step as the hook sees it.

    step: the steps done (1 after the first); values: each logged value summed over the micro-batches and divided by
    their number, "loss" first; grad_norm: the gradient norm before clipping (None where DeepSpeed has none yet);
    lr: the first parameter group's learning rate for the next step; seconds: the step's wall time."""

    step: int
    values: dict[str, float]
    grad_norm: float | None
    lr: float
    seconds: float


def _backward(loss: torch.Tensor) -> None:
    loss.backward()


def step_optimizer(
    params: Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    grad_clip: float = 1.0,
    clip: Callable = torch.nn.utils.clip_grad_norm_,
):
    """Clip the gradients' norm at `grad_clip`, step the optimizer and the schedule, clear the gradients; returns the
    norm before clipping (what `clip` returns)."""
    grad_norm = clip(params, grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def run_steps(
    batch_of: Callable[[int, int], B],
    loss_of: Callable[[B], Loss],
    params: list[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    steps: int,
    start: int = 0,
    micro_batches: int = 1,
    grad_clip: float = 1.0,
    context: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    backward: Callable[[torch.Tensor], None] = _backward,
    clip: Callable = torch.nn.utils.clip_grad_norm_,
    desc: str = "train",
    progress: bool = True,
    postfix: Callable[[StepLog], dict[str, str]] | None = None,
    after_step: Callable[[StepLog], None] | None = None,
) -> StepLog | None:
    """Optimizer steps `start` .. `steps` - 1 of `loss_of` over `params`; returns the last step's log (None if none).

    `batch_of(step, micro)` draws a micro-batch (`step` counts from 0); `context` is entered around each
    micro-batch's loss and backward, not its drawing; `postfix` turns a step's log into the bar's
    fields (default: the loss); `after_step` runs after every step, once the weights have moved."""
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not progress)
    last = None
    for step in range(start, steps):
        started = time.perf_counter()
        values: dict[str, float] = {}
        # why: micro-batches add up their gradients before one optimizer step (gradient accumulation)
        for micro in range(micro_batches):
            batch = batch_of(step, micro)  # why outside the context: preparing data is not autocast's or DDP's
            with context():
                loss = loss_of(batch)
                parts = loss if isinstance(loss, Mapping) else {"loss": loss}
                backward(parts["loss"])
            for name, value in parts.items():
                if value is not None:
                    number = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                    values[name] = values.get(name, 0.0) + number / micro_batches
        # why: the paper clips the gradient norm (at 1.0) before every optimizer step
        grad_norm = step_optimizer(params, optimizer, scheduler, grad_clip, clip)
        last = StepLog(
            step=step + 1,
            values=values,
            grad_norm=None if grad_norm is None else float(grad_norm),
            lr=scheduler.get_last_lr()[0],
            seconds=time.perf_counter() - started,
        )
        bar.update(1)
        bar.set_postfix(postfix(last) if postfix else {"loss": f"{values['loss']:.4f}"})
        if after_step is not None:
            after_step(last)
    bar.close()
    return last
