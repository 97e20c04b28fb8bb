"""The instance picker trained on the frozen model's own answers: `lasagna train-picker`.

It learns from the decisions of `Answers` whose expression has a target and whose mask falls in several pieces
(`model/picker.py`): each piece is meant when the expression's targets cover most of it. The answers are the ones the
query verifier trains on (`train/answers.py`), collected with each expression's targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .answers import Answers, fit_passes
from .picker import InstancePicker, piece_masks, piece_shares


@dataclass
class Pieces:
    """The decisions of `Answers` a picker learns from: `index` (M,) into the answers, `pieces` (M, kh, kw) uint8
    each one's mask cut into pieces (`label_pieces`)."""

    index: torch.Tensor
    pieces: torch.Tensor

    def __len__(self) -> int:
        return len(self.index)


def pieces_of(answers: Answers, picker: InstancePicker, batch_size: int = 512) -> Pieces:
    """The decisions with a target whose mask falls in more than one piece at `picker`'s candidate level."""
    if answers.targets is None:
        raise ValueError("these answers hold no targets (written before the instance picker); collect them again")
    index, pieces = [], []
    candidates = answers.present.nonzero()[:, 0]
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start : start + batch_size]
        labelled = picker.pieces(answers.low_res[chunk].float())
        several = labelled.flatten(1).amax(1) > 1
        index.append(chunk[several])
        pieces.append(labelled[several].to(torch.uint8))
    if not index:
        return Pieces(torch.zeros(0, dtype=torch.long), torch.zeros(0, *answers.low_res.shape[1:], dtype=torch.uint8))
    return Pieces(torch.cat(index), torch.cat(pieces))


def _inputs(answers: Answers, pieces: Pieces, rows: torch.Tensor, embed, max_words: int):
    embeds, low_res, words, valid = answers.inputs(pieces.index[rows], embed, max_words)
    return embeds, low_res, pieces.pieces[rows].to(low_res.device, torch.long), words, valid


def train_picker(
    picker: InstancePicker,
    answers: Answers,
    embed: torch.nn.Module,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[float], int]:
    """Train `picker` in place (in float32) on the decisions of `answers` whose mask has several pieces (`fit_passes`,
    `InstancePicker.loss`). -> (each pass's mean loss, how many decisions it learnt from)."""
    pieces = pieces_of(answers, picker)
    if not len(pieces):
        raise ValueError("no answer's mask falls in several pieces: there is nothing to pick between; give more scenes")
    device = embed.weight.device

    def loss_of(rows: torch.Tensor) -> torch.Tensor:
        inputs = _inputs(answers, pieces, rows, embed, picker.max_words)
        targets = answers.targets[pieces.index[rows]].to(device)
        return picker.loss(*inputs, targets)

    losses = fit_passes(picker, len(pieces), loss_of, epochs, batch_size, lr, seed, "train instance picker", progress)
    return losses, len(pieces)


@torch.no_grad()
def picker_report(picker: InstancePicker, answers: Answers, embed: torch.nn.Module, batch_size: int = 256) -> dict:
    """On held-out answers: how often the picker keeps exactly the pieces the targets cover most of, and the masks'
    cumulative IoU with the targets (low-res frame, over the decisions with several pieces) before and after it."""
    pieces = pieces_of(answers, picker)
    device = embed.weight.device
    right, inter, union, inter_before, union_before = 0, 0.0, 0.0, 0.0, 0.0
    for start in range(0, len(pieces), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(pieces)))
        embeds, low_res, labelled, words, valid = _inputs(answers, pieces, rows, embed, picker.max_words)
        targets = answers.targets[pieces.index[rows]].to(device).float() >= 0.5
        picked = picker.pick(embeds, low_res, words, valid, labelled) > 0
        before = low_res > 0
        kept = piece_shares(labelled, picked.float()) > 0.5
        meant = piece_shares(labelled, targets.float()) >= 0.5
        real = piece_masks(labelled).flatten(2).any(-1)
        right += int(((kept == meant) | ~real).all(1).sum())
        inter += float((picked & targets).sum())
        union += float((picked | targets).sum())
        inter_before += float((before & targets).sum())
        union_before += float((before | targets).sum())
    return {
        "decisions": len(pieces),
        "picked_right": round(right / max(len(pieces), 1), 4),
        "ciou_before": round(inter_before / max(union_before, 1.0), 4),
        "ciou_after": round(inter / max(union, 1.0), 4),
    }
