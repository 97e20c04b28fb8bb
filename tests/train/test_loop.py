"""The one step loop: what it does around a stage's loss, in which order, and what it reports."""

import contextlib

import pytest
import torch

from lasagna.train.loop import run_steps
from lasagna.train.optim import warmup_linear_decay


def _problem(seed: int = 0):
    """A linear model, its optimizer and schedule, and fixed data: micro-batch (step, micro) is row 2*step + micro."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(1, 4))
    return model, x, y, optimizer, scheduler


def test_micro_batches_add_up_to_one_step_as_a_hand_written_loop_does():
    model, x, y, optimizer, scheduler = _problem()
    logs = []

    def loss_of(rows):
        loss = ((model(x[rows]) - y[rows]) ** 2).mean()
        return {"loss": loss / 2, "mse": loss, "skipped": None}  # halved: the two micro-batches make one mean

    last = run_steps(
        lambda step, micro: [2 * step + micro],
        loss_of,
        list(model.parameters()),
        optimizer,
        scheduler,
        steps=4,
        micro_batches=2,
        grad_clip=0.5,
        progress=False,
        after_step=logs.append,
    )

    ref, rx, ry, ref_optimizer, ref_scheduler = _problem()
    losses = []
    for step in range(4):
        mse = [((ref(rx[[2 * step + m]]) - ry[[2 * step + m]]) ** 2).mean() for m in range(2)]
        for loss in mse:
            (loss / 2).backward()
        losses.append(sum(float(loss.detach()) for loss in mse) / 2)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        ref_optimizer.step()
        ref_scheduler.step()
        ref_optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters(), strict=True))
    assert [log.step for log in logs] == [1, 2, 3, 4] and last is logs[-1]
    assert [log.values["mse"] for log in logs] == pytest.approx(losses, rel=1e-6)
    assert all(list(log.values) == ["loss", "mse"] for log in logs)  # None: nothing to log, not a zero
    assert logs[0].lr == pytest.approx(0.1) and logs[-1].lr == 0.0  # warmup from 0, then decay to 0 at the end
    assert all(log.grad_norm > 0 for log in logs)


def test_a_resumed_loop_runs_only_the_steps_left_and_draws_outside_the_context():
    model, x, y, optimizer, scheduler = _problem()
    entered, seen = [], []

    @contextlib.contextmanager
    def context():
        entered.append(torch.is_autocast_enabled("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    def batch_of(step, micro):
        seen.append((step, micro, torch.is_autocast_enabled("cpu")))
        return [step]

    def loss_of(rows):
        assert torch.is_autocast_enabled("cpu")  # the loss runs under the context
        return ((model(x[rows]).float() - y[rows]) ** 2).mean()

    params = list(model.parameters())
    last = run_steps(batch_of, loss_of, params, optimizer, scheduler, steps=4, start=2, context=context, progress=False)
    assert last.step == 4 and seen == [(2, 0, False), (3, 0, False)] and entered == [False, False]
    assert run_steps(batch_of, loss_of, params, optimizer, scheduler, steps=4, start=4, progress=False) is None


def test_accelerate_style_backward_and_clipping_replace_torchs():
    model, x, y, optimizer, scheduler = _problem()
    calls = []

    def backward(loss):
        calls.append("backward")
        (loss * 0.5).backward()

    def clip(params, max_norm):
        calls.append(("clip", max_norm))
        return torch.tensor(3.0)

    run_steps(
        lambda step, micro: [step],
        lambda rows: ((model(x[rows]) - y[rows]) ** 2).mean(),
        list(model.parameters()),
        optimizer,
        scheduler,
        steps=1,
        micro_batches=2,
        backward=backward,
        clip=clip,
        progress=False,
        after_step=lambda log: calls.append(("after", log.grad_norm)),
    )
    assert calls == ["backward", "backward", ("clip", 1.0), ("after", 3.0)]
    with pytest.raises(ValueError, match="micro_batches must be >= 1, got 0"):
        run_steps(lambda s, m: None, lambda b: None, [], optimizer, scheduler, steps=1, micro_batches=0)
