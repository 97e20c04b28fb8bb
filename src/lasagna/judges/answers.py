"""The query verifier trained on the frozen model's own answers: `lasagna train-verifier`.

The query verifier (`model/query_verifier.py`) reads only detached inputs: each scene's SAM embedding, each slot's
mask and the ids of the phrase the slot answers. With the rest of the model frozen, those inputs can be computed once
and read many times. Trained inside `lasagna train` it sees each one once, at the cost of the model's whole forward,
and in 4000 steps it never learned relations (docs/history.md); trained here, on the answers to 6000 scenes read
30 times over, it does. Its inputs are also the ones it meets at inference: the answers are decoded freely, as
`Lasagna.segment(image, query=...)` decodes them, so a relation the LLM wrongly answers `<ins>` comes with the mask the
LLM draws for it, not with the teacher-forced answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..atomic import write_atomic_file
from ..data.records import Expression, ReferRecord
from ..infer.engine import name_ids
from ..infer.judging import llm_log_odds
from .query import word_embeddings


@dataclass
class Answers:
    """Every decision of a model's answers to a referring source's expressions, as its query verifier reads them.

    embeds: (S, C, h, w) each scene's SAM embedding; scene: (N,) the scene of each decision; low_res: (N, kh, kw) its
    mask logits; names: each decision's phrase ids; llm: (N,) the LLM's log-odds of `<ins>` there; present: (N,) bool
    whether its expression has a target; targets: (N, kh, kw) the share of each low-res cell its expression's targets
    cover (`SamSegmenter.frame_masks`), what the instance picker learns from (None in files written before it). Tensors
    are kept in float16 on the CPU: a ShapeWorld scene costs 64 KB."""

    embeds: torch.Tensor
    scene: torch.Tensor
    low_res: torch.Tensor
    names: list[torch.Tensor]
    llm: torch.Tensor
    present: torch.Tensor
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.scene)

    def inputs(self, index: torch.Tensor, embed: torch.nn.Module, max_words: int):
        """Decisions `index` -> the query verifier's inputs (embeds, low_res, words, valid) on `embed`'s device."""
        device = embed.weight.device
        embeds = self.embeds[self.scene[index]].to(device, torch.float32)
        words, valid = word_embeddings(embed, [self.names[i].to(device) for i in index.tolist()], max_words)
        return embeds, self.low_res[index].to(device, torch.float32), words, valid


@torch.no_grad()
def collect_answers(lasagna, source, count: int, max_new_tokens: int = 128, progress: bool = True) -> Answers:
    """Free-decode every expression of the first `count` scenes of a referring `source` (each image encoded once) ->
    every decision of the answers. An answer without `<ins>` or `<no_ins>` adds nothing."""
    if count < 1:
        raise ValueError(f"collecting answers needs at least one scene, got {count}")
    engine = lasagna.engine
    embeds, scene, low_res, names, llm, present, targets = [], [], [], [], [], [], []
    for index in tqdm(range(min(count, len(source))), desc=f"answers {source.name}", disable=not progress):
        record = source[index]
        enc, resized, original = engine.encode_image(record.load_image())
        kept = False
        rows = engine.answer_queries(enc, [expr.text for expr in record.expressions], max_new_tokens)
        for expr, row in zip(record.expressions, rows, strict=True):
            if not row.decisions:
                continue
            low = engine.slot_low_res(enc, [d.hidden for d in row.decisions])
            truth = expr.load_masks()
            union = np.zeros(original, dtype=bool)
            for mask in truth:
                union |= mask
            frame = engine.model.sam.frame_masks(torch.from_numpy(union)[None], resized, low.shape[-2:])[0]
            for decision, ids, mask in zip(row.decisions, name_ids(row), low, strict=True):
                scene.append(len(embeds))
                low_res.append(mask.to("cpu", torch.float16))
                names.append(torch.tensor(ids, dtype=torch.long))
                llm.append(decision.score)
                present.append(len(truth) > 0)
                targets.append(frame.to(torch.float16))
                kept = True
        if kept:
            embeds.append(enc.sam_embeds[0].to("cpu", torch.float16))
    if not scene:
        raise ValueError(f"the model answered none of the expressions of {source.name} with <ins> or <no_ins>")
    return Answers(
        torch.stack(embeds),
        torch.tensor(scene),
        torch.stack(low_res),
        names,
        llm_log_odds(torch.tensor(llm)),
        torch.tensor(present),
        torch.stack(targets),
    )


def join_answers(first: Answers, second: Answers) -> Answers:
    """Two sets of answers as one (the second's scenes numbered after the first's); both with targets or neither."""
    if (first.targets is None) != (second.targets is None):
        raise ValueError("cannot join answers with targets and answers without")
    targets = None if first.targets is None else torch.cat([first.targets, second.targets])
    return Answers(
        torch.cat([first.embeds, second.embeds]),
        torch.cat([first.scene, second.scene + len(first.embeds)]),
        torch.cat([first.low_res, second.low_res]),
        first.names + second.names,
        torch.cat([first.llm, second.llm]),
        torch.cat([first.present, second.present]),
        targets,
    )


class ReasoningQueries:
    """A reasoning source's records as referring ones, for `collect_answers`: each query asked as `lasagna eval` asks
    it (`prompts.reasoning_question`), its target the record's mask (ignore pixels counted as not target)."""

    def __init__(self, source):
        self.source = source
        self.name = source.name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> ReferRecord:
        from ..prompts import reasoning_question

        record = self.source[index]

        def masks():
            target = np.asarray(record.load_mask()) == 1
            return target[None] if target.any() else target[None][:0]

        texts = [reasoning_question(q, record.is_sentence) for q in record.queries]
        return ReferRecord(record.image_id, record.load_image, tuple(Expression(t, masks) for t in texts))


def answering_digest(model) -> str:
    """A digest of the weights a model's answers come from: the paper's model's, not its judges' (which are trained on
    the answers), so a model and the same model with a verifier or a picker added share their answers files."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_answers(answers: Answers, path: Path, description: dict) -> Path:
    """Write `answers` atomically as safetensors, with `description` (what they are the answers of: model, data)."""
    lengths = torch.tensor([len(n) for n in answers.names], dtype=torch.long)
    flat = torch.cat(answers.names) if answers.names else torch.zeros(0, dtype=torch.long)
    tensors = {
        "embeds": answers.embeds,
        "scene": answers.scene,
        "low_res": answers.low_res,
        "name_ids": flat,
        "name_lengths": lengths,
        "llm": answers.llm,
        "present": answers.present,
    }
    if answers.targets is not None:
        tensors["targets"] = answers.targets
    metadata = {"description": json.dumps(description, sort_keys=True)}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return write_atomic_file(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_answers(path: Path, description: dict) -> Answers:
    """Read answers `save_answers` wrote; a file made of another model's answers, or of other data, is refused by
    name of what differs."""
    try:
        handle = safe_open(str(path), "pt")
    except Exception as e:  # why broad: safetensors raises its own error types for a file that is not one of its own
        raise ValueError(f"{path} is not an answers file written by lasagna train-verifier or train-picker: {e}") from e
    with handle as f:
        saved = json.loads((f.metadata() or {}).get("description", "{}"))
        differ = sorted(k for k in set(saved) | set(description) if saved.get(k) != description.get(k))
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} there, {description.get(k)!r} asked" for k in differ)
            raise ValueError(f"{path} holds other answers than these ({shown}); remove it or pass another path")
        t = {k: f.get_tensor(k) for k in list(f.keys())}
    missing = {"embeds", "scene", "low_res", "name_ids", "name_lengths", "llm", "present"} - set(t)
    if missing:
        raise ValueError(
            f"{path} is not an answers file written by lasagna train-verifier or train-picker: no {sorted(missing)}"
        )
    names = list(torch.split(t["name_ids"], t["name_lengths"].tolist()))
    return Answers(t["embeds"], t["scene"], t["low_res"], names, t["llm"], t["present"], t.get("targets"))


@torch.no_grad()
def judge_answers(verifier, answers: Answers, embed: torch.nn.Module, batch_size: int = 512) -> torch.Tensor:
    """(N,) the verifier's log-odds of every decision of `answers`."""
    out = []
    for start in range(0, len(answers), batch_size):
        index = torch.arange(start, min(start + batch_size, len(answers)))
        out.append(verifier.judge_words(*answers.inputs(index, embed, verifier.max_words)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def train_on_answers(
    verifier,
    answers: Answers,
    embed: torch.nn.Module,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train `verifier` in place (in float32) on `answers` (`fit_passes`); its loss is `QueryVerifier.loss` (BCE and
    the look loss). -> each pass's mean loss.

    Many passes, not one: on ShapeWorld's 6000 scenes the loss still fell from pass 10 to 30 (docs/history.md)."""
    if not bool(answers.present.any()) or bool(answers.present.all()):
        raise ValueError("training a query verifier needs decisions both with and without a target; give more scenes")
    device = embed.weight.device

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        inputs = answers.inputs(index, embed, verifier.max_words)
        return verifier.loss(*inputs, answers.present[index].to(device))

    return fit_passes(verifier, len(answers), loss_of, epochs, batch_size, lr, seed, "train query verifier", progress)


def fit_passes(
    module, count: int, loss_of, epochs: int, batch_size: int, lr: float, seed: int, desc: str, progress: bool = True
) -> list[float]:
    """Train `module` in place (in float32) on `count` examples, `epochs` passes in shuffled batches of their indices
    given to `loss_of`: AdamW, one-cycle learning rate, clipping at 1.0. -> each pass's mean loss."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    steps_per_epoch = max(1, count // batch_size)
    module.float().requires_grad_(True).train()  # why: a model loaded for inference holds frozen weights
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            loss = loss_of(order[step * batch_size : (step + 1) * batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        losses.append(total / steps_per_epoch)
    bar.close()
    module.eval()
    return losses


def auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Probability that a positive outscores a negative (ties count half); NaN without both."""
    pos, neg = scores[positive].numpy(), scores[~positive].numpy()
    if not len(pos) or not len(neg):
        return float("nan")
    return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
